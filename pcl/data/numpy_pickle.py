"""What a CIFAR batch pickle may call of numpy: checked stand-ins that build arrays and scalars of plain numbers from
the pickle's own bytes, so that no state a file chose ever reaches numpy's C code.

numpy pickles an array as `_reconstruct(ndarray, (0,), b'b')` and a BUILD of (version, shape, dtype, Fortran order,
bytes), at protocol 5 as `_frombuffer(bytes, dtype, shape, order)`; a dtype as `dtype('u1', False, True)` and a BUILD
of its state; a scalar as `scalar(dtype, bytes)`. numpy's own `__setstate__` trusts the state it is given: an object
dtype with a list shorter than its shape is read past its end (a 248-byte batch file crashed the process), and
`ndarray` or `_reconstruct` called with a large shape allocate it unfilled (stale memory as images). Here:

- a dtype is a number type (bool, signed or unsigned integer, float, complex) of one of numpy's sizes, its byte order
  from its state; no object, string, void or structured dtype;
- an array is `np.frombuffer` of bytes of exactly its shape's size (a read-only view of them), never an object array;
- a scalar is one such number read from its bytes;
- `ndarray` is only the marker `_reconstruct` expects: calling it is refused.

Each stand-in is a small object whose BUILD is the check above; `unwrap` turns those in a loaded dict into arrays.
Whatever does not fit raises ValueError or TypeError, which `restricted_loads` reports as a damaged pickle.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from pcl.safe_pickle import PROTOCOL2_BYTES, DamagedPickleError

#: the number dtypes as numpy names them in a pickle
_NUMBER_SPECS = frozenset({"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"})


class NdarrayMarker:
    """`numpy.ndarray` as a pickle names it: the subtype `_reconstruct` is given. Calling numpy's would allocate
    any shape unfilled, so the marker is not callable (and holds nothing a BUILD could set)."""

    __slots__ = ()


NDARRAY = NdarrayMarker()


class PickledDtype:
    """numpy's `dtype(spec, align, copy)` of a number type; its BUILD sets only the byte order."""

    __slots__ = ("dtype",)

    def __init__(self, spec: Any, align: Any = False, copy: Any = True) -> None:
        if isinstance(spec, bytes):
            spec = spec.decode("latin1")
        if not isinstance(spec, str) or spec not in _NUMBER_SPECS:
            raise ValueError(f"a dtype of numbers (bool, integer, float, complex), not {str(spec)[:40]!r}")
        self.dtype = np.dtype(spec)

    def __setstate__(self, state: Any) -> None:
        # numpy's state of a number dtype: (version, byte order, None, None, None, -1, -1, flags)
        if not (isinstance(state, tuple) and len(state) == 8 and state[2:5] == (None, None, None)
                and state[5:7] == (-1, -1) and state[1] in ("<", ">", "|", "=")):
            raise ValueError("a dtype's state other than a number type's")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


def _dtype(value: Any) -> np.dtype:
    if not isinstance(value, PickledDtype):
        raise ValueError("an array or scalar of a dtype of numbers")
    return value.dtype


def _raw(data: Any) -> bytes:
    """An array's or scalar's bytes: bytes, a bytearray (protocol 5), or text (a Python 2 original read with
    encoding="latin1", as numpy reads it)."""
    if isinstance(data, str):
        return data.encode("latin1")
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    raise ValueError("an array's data as bytes")


def _shape(shape: Any) -> tuple[int, ...]:
    if not (isinstance(shape, tuple) and len(shape) <= 32
            and all(type(n) is int and n >= 0 for n in shape)):  # noqa: E721 - not a bool
        raise ValueError(f"an array's shape of sizes, not {str(shape)[:60]}")
    return shape


def _array(raw: Any, dtype: Any, shape: Any, fortran: bool) -> np.ndarray:
    data, kind, dims = _raw(raw), _dtype(dtype), _shape(shape)
    size = math.prod(dims) * kind.itemsize
    if len(data) != size:
        raise ValueError(f"an array of shape {dims} and {kind} holds {size} bytes, not {len(data)}")
    return np.frombuffer(data, kind).reshape(dims, order="F" if fortran else "C")


class PickledArray:
    """An array being rebuilt: `array` once its BUILD (numpy's state) has been checked and read."""

    __slots__ = ("array",)

    def __init__(self, array: np.ndarray | None = None) -> None:
        self.array = array

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]  # (version, shape, dtype, Fortran order, data); numpy also reads it without version
        if not (isinstance(state, tuple) and len(state) == 4 and isinstance(state[2], (bool, int))):
            raise ValueError("an array's state other than (shape, dtype, Fortran order, data)")
        shape, dtype, fortran, raw = state
        self.array = _array(raw, dtype, shape, bool(fortran))


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> PickledArray:
    """numpy's `_reconstruct` as an array's pickle calls it: an empty array that its BUILD fills."""
    if subtype is not NDARRAY or not isinstance(typecode, (bytes, str)) or math.prod(_shape(shape)) != 0:
        raise ValueError("an array is rebuilt from an empty ndarray, then its state")
    return PickledArray()


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> PickledArray:
    """numpy's `_frombuffer` (protocol 5): the array of exactly the pickle's bytes."""
    if order not in ("C", "F"):
        raise ValueError(f"an array's order is C or F, not {str(order)[:20]!r}")
    return PickledArray(_array(buffer, dtype, shape, order == "F"))


def _scalar(dtype: Any, data: Any = None) -> Any:
    """numpy's `scalar` of a number type: the number its bytes hold (a 0-d array's one element)."""
    return _array(data, dtype, (), False)[()]


def unwrap(loaded: Any) -> Any:
    """A loaded dict with its values' arrays as numpy arrays (a CIFAR batch holds them there, nowhere deeper: an
    array anywhere else stays a PickledArray, which no reader takes for one); an array whose state never came is
    refused (DamagedPickleError)."""
    if not isinstance(loaded, dict):
        return loaded
    out = {}
    for key, value in loaded.items():
        if isinstance(value, PickledArray):
            if value.array is None:
                raise DamagedPickleError("ValueError: an array without its data")
            value = value.array
        out[key] = value
    return out


#: the globals a CIFAR batch file may name (numpy 1's and 2's module names), each mapped to its stand-in
GLOBALS: dict[tuple[str, str], Any] = {
    **{(module, "_reconstruct"): _reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "_frombuffer"): _frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): NDARRAY,
    ("numpy", "dtype"): PickledDtype,
    **PROTOCOL2_BYTES,
}

__all__ = ["GLOBALS", "NDARRAY", "PickledArray", "PickledDtype", "unwrap"]
