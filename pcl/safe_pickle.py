"""The one owner of reading pickles the suite did not just write (CIFAR batch files, Sacred failure entries).

A pickle is a program: its GLOBAL, STACK_GLOBAL, INST, OBJ, NEWOBJ and EXT opcodes import any global, REDUCE calls
it, BUILD calls `__setstate__` or sets attributes. Every one of those imports goes through `find_class`, so the
unpickler here resolves a global only when its (module, name) pair is on an exact allow-list given by the caller:

- no module-wide allowances, and no dotted names: Python's own `find_class` resolves `a.b.c` attribute chains
  for protocol >= 4 (``numpy.dtypes`` + ``__builtins__.get`` reaches `eval`); a name holding a dot is refused;
- the allowed object is looked up with `importlib` + one `getattr`, never through pickle's Python 2 name mapping;
- persistent ids are refused;
- whatever else loading raises is one DamagedPickleError: a damaged pickle hands the allowed callables arguments
  they were never meant to see, and numpy's C code then raises anything (a truncated dtype state: SystemError);
- before loading, its opcodes are read (pickletools) into the graph of what holds what, and the objects reached
  counted, a shared object each time it is reached, over everything the pickle builds (dropped objects too): a
  pickle of 128 bytes whose tuples (or lists) hold one another twice is 2^40 objects to hash or print (numpy
  prints an unknown dtype spec into its error), and one of 60 KB that puts a memoized tuple of a million objects
  into ten thousand dicts hashes it ten thousand times. More than MAX_EXPANDED in all (or the caller's lower
  limit), objects held more than MAX_DEPTH deep (hashing a tuple key recurses in C: a segfault), or an object
  that holds itself: refused, never loaded;
- a stand-in is seen by the pickle as a callable and nothing else (a BUILD cannot set its attributes).

What is left for a pickle to do is call the allowed callables on data it holds itself; each caller allows only
callables that are harmless whatever their arguments, or checked stand-ins of them (`allowed` may map a global to
one): numpy's array rebuilders (pcl.data.numpy_pickle), protocol 2's spelling of bytes (PROTOCOL2_BYTES, where
`_codecs.encode` itself would apply any codec: hex of hex of ... doubles a string per 4 bytes of pickle).
Imports only the standard library: no torch.
"""
from __future__ import annotations

import importlib
import io
import pickle
import pickletools
from typing import Any, BinaryIO, Iterable, Mapping


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that asks for a global outside the allow-list (or a persistent id): nothing of it is loaded."""


class DamagedPickleError(pickle.UnpicklingError):
    """A pickle that does not load (truncated, overwritten, hand-made): the error it raised, as one message."""


def _show(text: Any) -> str:
    """A name from the pickle as one printable line (it is attacker-chosen: no newlines, no control codes)."""
    if isinstance(text, str) and text.isprintable() and len(text) <= 120:
        return text
    return ascii(text)[:120]


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves exactly the (module, name) pairs of `allowed`; `what` says what the file should hold (for the
    message of a refusal). `allowed` may map a pair to what the pickle gets in its place (a checked wrapper of the
    named callable); a pair mapped to None, or given in a set, is the named object itself."""

    def __init__(self, file: BinaryIO, allowed: Iterable[tuple[str, str]] | Mapping[tuple[str, str], Any],
                 what: str, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._stand_ins = dict(allowed) if isinstance(allowed, Mapping) else {}
        self._allowed = frozenset(allowed)
        self._what = what

    def find_class(self, module: str, name: str) -> Any:
        if (not isinstance(module, str) or not isinstance(name, str) or "." in name
                or (module, name) not in self._allowed):
            raise UnsafePickleError(f"refusing to load global {_show(module)}.{_show(name)}: {self._what}")
        stand_in = self._stand_ins.get((module, name))
        if stand_in is not None:  # a callable as a callable only; a marker (no attributes to set) as it is
            return _StandIn(stand_in) if callable(stand_in) else stand_in
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as err:  # an allowed name this numpy/Python does not have
            raise UnsafePickleError(f"cannot resolve global {module}.{name}: {err}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing persistent id {_show(pid)}: {self._what}")


class _StandIn:
    """A stand-in as the pickle sees it: callable, and nothing else. A BUILD on the function itself set its
    attributes (`__defaults__`) for the whole process."""

    __slots__ = ("_call",)

    def __init__(self, call: Any) -> None:
        object.__setattr__(self, "_call", call)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        raise TypeError("a stand-in takes no state")

    def __setattr__(self, name: str, value: Any) -> None:
        raise TypeError("a stand-in takes no attributes")


#: the most objects a pickle may build, a shared one counted each time it is reached (a CIFAR-100 training file:
#: ~150,000; a failure entry: a few thousand); numpy prints 2,000,000 in about a second
MAX_EXPANDED = 2_000_000
#: the deepest a pickle's objects may hold one another: hashing or printing a tuple recurses in C without a check
#: (a key nested 150,000 deep, one byte per level, overflowed the stack); pickle.dumps writes nothing deeper than
#: Python's recursion limit (1,000)
MAX_DEPTH = 1_000


def _latin1(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """`_codecs.encode` as protocol 2 pickles bytes: `encode(text, "latin1")`, and no other codec."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise ValueError("bytes at protocol 2 are text encoded as latin1, not another codec")
    return text.encode("latin1")


#: how protocol 2 spells bytes, for an allow-list (a mapping to stand-ins): `_codecs.encode(text, "latin1")` only
PROTOCOL2_BYTES = {("_codecs", "encode"): _latin1}
_MEMO_PUT = ("PUT", "BINPUT", "LONG_BINPUT")
_MEMO_GET = ("GET", "BINGET", "LONG_BINGET")
#: opcodes that add to an object already built (the first of their stack_before) instead of making a new one
_FILLS = ("APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD")


def expanded_size(data: bytes, limit: int = MAX_EXPANDED) -> int:
    """The objects the pickle `data` builds, a shared one counted each time it is reached: the sum over every
    object no other holds (what it returns, and what it drops or leaves in its memo) of the objects reached from
    it (limit + 1 at most, and for an object that holds itself), read from its opcodes without building anything:
    the graph of what holds what, from the stack effects pickletools declares. A container is memoized empty and
    filled after, so the graph follows each object, not its size when memoized.
    ValueError/IndexError/KeyError: not a well-formed pickle."""
    children: list[list[int]] = []  # node -> the nodes it holds
    stack: list[int] = []
    marks: list[int] = []
    memo: dict[int, int] = {}
    for opcode, arg, _ in pickletools.genops(data):
        name = opcode.name
        if name in _MEMO_PUT:
            memo[arg] = stack[-1]
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in _MEMO_GET:
            stack.append(memo[arg])
        elif name == "MARK":
            marks.append(len(stack))
        elif name == "POP" and marks and marks[-1] == len(stack):
            marks.pop()  # POP on a mark drops the mark
        elif name == "DUP":
            stack.append(stack[-1])
        else:
            before, held = opcode.stack_before, []
            if pickletools.markobject in before:  # what is above the mark, then what is below it
                start = marks.pop()
                held = stack[start:]
                del stack[start:]
                before = before[:before.index(pickletools.markobject)]
            if before:
                held = stack[len(stack) - len(before):] + held
                del stack[len(stack) - len(before):]
            if name in _FILLS:
                children[held[0]].extend(held[1:])
                stack.append(held[0])
            elif opcode.stack_after:
                children.append(held)
                stack.extend([len(children) - 1] * len(opcode.stack_after))
    return _total(children, limit)


def _total(children: list[list[int]], limit: int) -> int:
    """The sum over nodes no node holds of their expanded sizes (1 + those of their children, each capped at
    limit + 1), capped at limit + 1; limit + 1 for a cycle or for objects held more than MAX_DEPTH deep."""
    held = {c for nodes in children for c in nodes}
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    total = 0
    for root in range(len(children)):
        todo = [(root, False)]
        on_path: set[int] = set()
        while todo:
            node, done = todo.pop()
            if done:
                on_path.discard(node)
                size[node] = min(limit + 1, 1 + sum(size[c] for c in children[node]))
                depth[node] = 1 + max((depth[c] for c in children[node]), default=0)
                if depth[node] > MAX_DEPTH:
                    return limit + 1
            elif node not in size:
                if node in on_path:
                    return limit + 1  # an object that holds itself (only a list, dict or set filled after)
                on_path.add(node)
                todo.append((node, True))
                todo.extend((c, False) for c in children[node] if c not in size)
        if root not in held:
            total += size[root]
        if size[root] > limit or total > limit:
            return limit + 1
    return total


def restricted_loads(data: bytes, allowed: Iterable[tuple[str, str]] | Mapping[tuple[str, str], Any], what: str,
                     limit: int = MAX_EXPANDED, **kwargs: Any) -> Any:
    """Unpickle `data` resolving only the `allowed` globals (see RestrictedUnpickler); kwargs go to
    pickle.Unpickler (encoding, errors, fix_imports). Raises UnsafePickleError (a global refused) or
    DamagedPickleError (anything else that stops it loading, or more than `limit` objects, or objects held more
    than MAX_DEPTH deep), nothing else. A caller whose files hold far fewer objects gives a lower `limit`: the
    work an allowed callable does can grow with what it is given (a dict of colliding keys, with their square)."""
    unpickler = RestrictedUnpickler(io.BytesIO(data), allowed, what, **kwargs)  # a caller's mistake raises as is
    try:
        size = expanded_size(data, limit)
    except (ValueError, IndexError, KeyError) as err:  # what a load would fail on too, without running anything
        raise DamagedPickleError(f"not a well-formed pickle ({_named(err)})") from None
    if size > limit:
        raise DamagedPickleError(f"it builds more than {limit:,} objects, shared ones counted each time they are "
                                 f"reached, or holds objects more than {MAX_DEPTH:,} deep: not loaded")
    try:
        return unpickler.load()
    except UnsafePickleError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged pickle can make numpy's C code raise any type
        raise DamagedPickleError(_named(err)) from err


def _named(err: BaseException) -> str:
    """`Type: message` of an error a pickle raised, as one printable line (its text can be the pickle's own: an
    unknown codec's name, with escape codes); the type alone where its text cannot be had."""
    try:
        text = " ".join(str(err).split())
    except Exception:  # noqa: BLE001 - an object whose __str__ fails
        text = ""
    if not text.isprintable():
        text = ascii(text)[1:-1]
    return f"{type(err).__name__}: {text[:300]}" if text else type(err).__name__


__all__ = ["MAX_DEPTH", "MAX_EXPANDED", "PROTOCOL2_BYTES", "DamagedPickleError", "RestrictedUnpickler",
           "UnsafePickleError", "expanded_size", "restricted_loads"]
