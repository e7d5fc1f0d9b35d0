"""Value checks of config keys: each takes (key, value) and returns the normalized value, or raises ConfigError
naming the key, the value and what is allowed. pcl.schema builds its key table from them. Standard library only.
"""
from __future__ import annotations

import difflib
import math
import numbers
import re
from typing import Any, Callable, Mapping


class ConfigError(ValueError):
    """A config value of the wrong type, out of range, or wrong together with another; raised before any training,
    record, checkpoint or lock. Its message names the key, the value and what is allowed."""


# ---- value checks: (key, value) -> normalized value, or ConfigError --------------------------------------------
def _bad(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"config key {key!r}={value!r} is invalid: must be {allowed}")


def did_you_mean(given: Any, allowed: Any, show: Callable[[str], str] = repr) -> str:
    """"; did you mean X?" with the allowed name closest to each mistyped one (difflib's best match), else "" (one
    place for the hint every name check gives: keys, values, options)."""
    names = [given] if isinstance(given, str) else [g for g in given if isinstance(g, str)] \
        if isinstance(given, (list, tuple, set, frozenset)) else []
    candidates = [str(a) for a in allowed]
    folded = {c.casefold(): c for c in reversed(candidates)}  # method=PCL, dataset=CIFAR10: the name in its case
    close = list(dict.fromkeys(
        c for name in names for c in ([folded[name.casefold()]] if name.casefold() in folded
                                      else difflib.get_close_matches(name, candidates, n=1))))
    return f"; did you mean {', '.join(map(show, close))}?" if close else ""


def integer(minimum: int, allow_none: bool = False, maximum: int | None = None
            ) -> tuple[Callable[[str, Any], Any], str]:
    allowed = (f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
               + (" or None" if allow_none else ""))

    def check(key: str, value: Any) -> int | None:
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum or (
                maximum is not None and value > maximum):
            raise _bad(key, value, allowed)
        return int(value)
    return check, allowed


def real(ok: Callable[[float], bool], allowed: str, allow_none: bool = False
         ) -> tuple[Callable[[str, Any], Any], str]:
    def check(key: str, value: Any) -> float | None:
        if value is None and allow_none:
            return None
        if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
                or not ok(value)):
            raise _bad(key, value, allowed)
        return float(value)
    return check, allowed


def boolean(allow_none: bool = False) -> tuple[Callable[[str, Any], Any], str]:
    allowed = "True or False" + (" or None" if allow_none else "")

    def check(key: str, value: Any) -> bool | None:
        if value is None and allow_none:
            return None
        if not isinstance(value, bool):
            raise _bad(key, value, allowed)
        return value
    return check, allowed


def text(allow_none: bool = False, pattern: str | None = None, allowed: str | None = None
         ) -> tuple[Callable[[str, Any], Any], str]:
    allowed = allowed or ("a string" + (" or None" if allow_none else ""))

    def check(key: str, value: Any) -> str | None:
        if value is None and allow_none:
            return None
        if not isinstance(value, str) or (pattern is not None and not re.fullmatch(pattern, value)):
            raise _bad(key, value, allowed)
        if "\x00" in value:  # no path, name or comment holds one (os calls refuse it with a ValueError)
            raise _bad(key, value, f"{allowed}, without NUL characters")
        return value
    return check, allowed


def folder(allow_none: bool = False) -> tuple[Callable[[str, Any], Any], str]:
    """A folder: a path that is not empty or blank ('' would be the current directory, never asked for)."""
    return text(allow_none, pattern=r"(?s).*\S.*",
                allowed=("None or " if allow_none else "") + "a folder (a non-empty path)")


def choice(names: Callable[[], Any]) -> tuple[Callable[[str, Any], Any], str]:
    """One of a registry's names (read when checking, so registries stay the one list)."""
    def check(key: str, value: Any) -> str:
        allowed = sorted(names())
        if not isinstance(value, str) or value not in allowed:
            raise _bad(key, value, f"one of {', '.join(allowed)}{did_you_mean(value, allowed)}")
        return value

    class Allowed:  # the registry's names, read when shown
        def __str__(self) -> str:
            return "one of " + ", ".join(sorted(names()))
    return check, Allowed()


def epochs_list() -> tuple[Callable[[str, Any], Any], str]:
    allowed = "a list of increasing epochs >= 1, or None (the recipe's, scaled to `epochs`)"

    def check(key: str, value: Any) -> list[int] | None:
        if value is None:
            return None
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise _bad(key, value, allowed)
        out = [integer(1)[0](key, m) for m in value]
        if out != sorted(out):
            raise _bad(key, value, allowed)
        return out
    return check, allowed


def mapping() -> tuple[Callable[[str, Any], Any], str]:
    def check(key: str, value: Any) -> dict[str, Any]:
        value = {} if value is None else value
        if not isinstance(value, Mapping):
            raise _bad(key, value, "a dict of the method's options")
        return dict(value)
    return check, "a dict of the method's options"


#: the largest seed: numpy's and Sacred's seeds are 32-bit
MAX_SEED = 2 ** 32 - 1


def _seeds(key: str, value: Any) -> list[int]:
    seeds = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(seeds, (list, tuple)) or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED for s in seeds)
            or len(set(seeds)) != len(seeds)):
        raise _bad(key, value, f"a non-empty list of distinct integers from 0 to {MAX_SEED}")
    return list(seeds)
