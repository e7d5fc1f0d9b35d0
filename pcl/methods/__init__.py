"""Training methods: each lives in its own file and declares itself there (`DECLARATION = MethodSpec(...)`).

`METHODS` maps every declared method (pcl.registry, read without torch) to its class, found in the declaring file:
the class whose `declaration` is that file's DECLARATION. `build_method` passes the declared defaults merged with
the run's options, so a default is written once, in the declaration.
"""
from __future__ import annotations

import importlib
from typing import Any, Iterable, Mapping

from pcl import registry
from pcl.methods.base import Method, check_views
from pcl.recipes import run_classes
from pcl.schema import ConfigError, canonical_json, infra_options


def _implementation(name: str) -> type[Method]:
    module = importlib.import_module(registry.method_module(name))
    declaration = getattr(module, "DECLARATION")
    found = [obj for obj in vars(module).values()
             if isinstance(obj, type) and issubclass(obj, Method) and obj.__dict__.get("declaration") is declaration]
    if len(found) != 1:
        raise TypeError(f"{module.__name__}: exactly one Method subclass must set `declaration = DECLARATION` "
                        f"(found {len(found)})")
    return found[0]


#: every declared method -> its class
METHODS: dict[str, type[Method]] = {name: _implementation(name) for name in registry.methods()}


def method_class(name: str) -> type[Method]:
    """The class of method `name`; unknown names fail listing the known ones."""
    try:
        return METHODS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}") from None


def check_method_inputs(configs: Iterable[Mapping[str, Any]]) -> None:
    """The files that run configs' options name for their methods to read (Method.check_inputs: kd's teacher
    model), each read once per distinct method, options and number of classes, before anything starts (a grid, the
    launcher's submission, `python -m pcl.distributed`); a file the tracking layer resolves later (kd's teacher
    named by `teacher_run_key`) is left to it. ConfigError: one line naming the option, its value and what it must
    be."""
    seen = set()
    for cfg in configs:
        resolved_later = infra_options(cfg)
        options = {k: v for k, v in cfg["options"].items() if k not in resolved_later}
        key = (cfg["method"], canonical_json(options), run_classes(cfg))
        if key in seen:
            continue
        seen.add(key)
        try:
            method_class(cfg["method"]).check_inputs(options, key[2])
        except (ValueError, OSError) as err:
            raise ConfigError(f"{' '.join(str(err).split())}; checked for the {cfg['method']} runs on "
                              f"{cfg.get('dataset')} ({key[2]} classes)") from None


def method_defaults(name: str) -> dict[str, Any]:
    """The method's own options and their declared defaults (everything but backbone, num_classes and dropout)."""
    method_class(name)
    return registry.method(name).defaults


def build_method(name: str, backbone: str, num_classes: int, *, dropout: float | None = None,
                 **options: Any) -> Method:
    """Build a registered method; an option it does not take fails naming the option and the allowed ones.

    options: merged over the declared defaults. dropout: probability of the backbone's dropout layers, forwarded to
    every network and branch the method builds; None = the zoo's default for the backbone (declared `dropout`:
    0.5 for vgg16); a backbone without dropout layers refuses any other value (ValueError naming dropout and the
    backbone).
    """
    cls = method_class(name)
    allowed = method_defaults(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"method {name!r} has no option(s) {', '.join(unknown)}; "
                         f"allowed: {', '.join(sorted(allowed)) or '(none)'}")
    spec = registry.method(name)
    checked = {}
    for key, value in options.items():  # the declared checks, as a run config's (pcl.schema)
        try:
            checked[key] = spec.option(key).check(value)
        except ValueError as err:
            raise ValueError(f"method {name!r}: option {key}={value!r} is invalid: {err}") from None
    return cls(backbone, num_classes, dropout=dropout, **{**allowed, **checked})


__all__ = ["METHODS", "Method", "build_method", "check_method_inputs", "check_views", "method_class",
           "method_defaults"]
