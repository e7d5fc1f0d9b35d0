"""Training methods, found through one explicit registry (name -> class); each method lives in its own file."""
from __future__ import annotations

import inspect
from typing import Any

from pcl.methods.base import Method, check_views
from pcl.methods.baseline import Baseline
from pcl.methods.cl_ilr import CLILR
from pcl.methods.dml import DML
from pcl.methods.ffl import FFL
from pcl.methods.kd import KD
from pcl.methods.kdcl import KDCL
from pcl.methods.okddip import OKDDip
from pcl.methods.one import ONE
from pcl.methods.pcl import PCL

METHODS: dict[str, type[Method]] = {
    "baseline": Baseline,
    "pcl": PCL,
    "dml": DML,
    "cl_ilr": CLILR,
    "one": ONE,
    "ffl": FFL,
    "okddip": OKDDip,
    "kdcl": KDCL,
    "kd": KD,
}


def method_class(name: str) -> type[Method]:
    """The class registered under `name`; unknown names fail listing the known ones."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}") from None


#: Constructor arguments that are the run's, not a method's own options: every method takes them.
RUN_ARGUMENTS = ("backbone", "num_classes", "dropout")


def method_defaults(name: str) -> dict[str, Any]:
    """The method's own options and their defaults (everything but backbone, num_classes and dropout)."""
    params = inspect.signature(method_class(name).__init__).parameters
    return {k: p.default for k, p in params.items()
            if k != "self" and k not in RUN_ARGUMENTS and p.default is not inspect.Parameter.empty}


def build_method(name: str, backbone: str, num_classes: int, *, dropout: float | None = None,
                 **options: Any) -> Method:
    """Build a registered method; an option it does not take fails naming the option and the allowed ones.

    dropout: probability of the backbone's dropout layers, forwarded to every network and branch the method
    builds; None = the zoo's default for the backbone (`pcl.models.DEFAULT_DROPOUT`: 0.5 for vgg16); a backbone
    without dropout layers refuses any other value (ValueError naming dropout and the backbone).
    """
    cls = method_class(name)
    allowed = method_defaults(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"method {name!r} has no option(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join(sorted(allowed)) or '(none)'}")
    return cls(backbone, num_classes, dropout=dropout, **options)


__all__ = ["METHODS", "Method", "build_method", "check_views", "method_class", "method_defaults"]
