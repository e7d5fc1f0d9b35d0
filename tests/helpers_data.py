"""Test helper: tiny fake CIFAR-10/100 files in the ORIGINAL python-version on-disk layout.

The official archives hold Python 2 pickles: dicts whose keys and strings are Python 2 ``str`` and whose
``data`` is a numpy uint8 array ``[N, 3072]`` (R, G, B planes of 32x32, row-major) reconstructed through
``numpy.core.multiarray._reconstruct``. ``style="py2"`` writes exactly that kind of pickle (so loading needs
``encoding="latin1"`` or ``"bytes"`` like the real files); ``style="py3"`` writes a plain Python 3 pickle with
``bytes`` keys, as a user re-saving the files might.
"""
from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"


class Py2Str(bytes):
    """A Python 2 ``str``: pickled with the (SHORT_)BINSTRING opcodes."""


_RECONSTRUCT = np.zeros(1, np.uint8).__reduce__()[0]  # numpy(._)core.multiarray._reconstruct


class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler lets us emit Python 2 opcodes
    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: Py2Str) -> None:
        data = bytes(obj)
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[Py2Str] = save_py2_str

    def save_global(self, obj, name=None):  # noqa: ANN001 - pickle's signature
        if obj is _RECONSTRUCT:  # the module name the Python 2 era numpy wrote
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch[type(_RECONSTRUCT)] = save_global

    def reducer_override(self, obj):  # noqa: ANN001
        if isinstance(obj, np.ndarray):
            a = np.ascontiguousarray(obj)
            return (
                _RECONSTRUCT,
                (np.ndarray, (0,), Py2Str(b"b")),
                (1, a.shape, a.dtype, False, Py2Str(a.tobytes())),
            )
        return NotImplemented


def _to_py2(obj):  # noqa: ANN001, ANN202
    if isinstance(obj, dict):
        return {_to_py2(k): _to_py2(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_py2(v) for v in obj]
    if isinstance(obj, (str, bytes)):
        return Py2Str(obj.encode("latin1") if isinstance(obj, str) else obj)
    return obj


def _to_bytes_keys(obj):  # noqa: ANN001, ANN202
    if isinstance(obj, dict):
        return {(k.encode() if isinstance(k, str) else k): _to_bytes_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_bytes_keys(v) for v in obj]
    if isinstance(obj, str):
        return obj.encode()
    return obj


def dump(obj: dict, path: Path, style: str = "py2") -> None:
    """Pickle a dict of str keys in the given style (see module docstring)."""
    buf = io.BytesIO()
    if style == "py2":
        _Py2Pickler(buf, protocol=2).dump(_to_py2(obj))
    elif style == "py3":
        pickle.dump(_to_bytes_keys(obj), buf, protocol=2)
    else:
        raise ValueError(style)
    Path(path).write_bytes(buf.getvalue())


def random_images(n: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, 3, 32, 32]`` uint8 images."""
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)


def _rows(images: np.ndarray) -> np.ndarray:
    """The on-disk ``[N, 3072]`` rows: R plane, then G, then B, each 32x32 row-major."""
    return images.reshape(len(images), 3072)


def write_cifar10(
    root: Path, per_batch: int = 6, test_size: int = 7, seed: int = 0, style: str = "py2"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write ``root/cifar-10-batches-py``; return ``{"train": (images, labels), "test": ...}`` as written."""
    rng = np.random.default_rng(seed)
    d = Path(root) / CIFAR10_DIR
    d.mkdir(parents=True, exist_ok=True)
    train_x, train_y = [], []
    for i in range(1, 6):
        x, y = random_images(per_batch, rng), rng.integers(0, 10, per_batch)
        dump(
            {
                "batch_label": f"training batch {i} of 5",
                "labels": [int(v) for v in y],
                "data": _rows(x),
                "filenames": [f"img_{i}_{j}.png" for j in range(per_batch)],
            },
            d / f"data_batch_{i}",
            style,
        )
        train_x.append(x)
        train_y.append(y)
    tx, ty = random_images(test_size, rng), rng.integers(0, 10, test_size)
    dump(
        {
            "batch_label": "testing batch 1 of 1",
            "labels": [int(v) for v in ty],
            "data": _rows(tx),
            "filenames": [f"test_{j}.png" for j in range(test_size)],
        },
        d / "test_batch",
        style,
    )
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    dump({"num_cases_per_batch": per_batch, "label_names": names, "num_vis": 3072}, d / "batches.meta", style)
    return {"train": (np.concatenate(train_x), np.concatenate(train_y)), "test": (tx, ty)}


def write_cifar100(
    root: Path, train_size: int = 12, test_size: int = 5, seed: int = 0, style: str = "py2"
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write ``root/cifar-100-python``; return the fine labels with the images, as written."""
    rng = np.random.default_rng(seed)
    d = Path(root) / CIFAR100_DIR
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", train_size), ("test", test_size)):
        x, fine = random_images(n, rng), rng.integers(0, 100, n)
        fine[0] = 99  # exercise the top of the label range
        dump(
            {
                "filenames": [f"{split}_{j}.png" for j in range(n)],
                "batch_label": f"{split} batch",
                "fine_labels": [int(v) for v in fine],
                "coarse_labels": [int(v) // 5 for v in fine],
                "data": _rows(x),
            },
            d / split,
            style,
        )
        out[split] = (x, fine)
    dump(
        {
            "fine_label_names": [f"fine_{i}" for i in range(100)],
            "coarse_label_names": [f"coarse_{i}" for i in range(20)],
        },
        d / "meta",
        style,
    )
    return out
