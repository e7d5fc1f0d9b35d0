"""What a method or a backbone declares about itself, and how the records side reads it without importing torch.

A method file (`pcl/methods/<name>.py`) starts with `DECLARATION = MethodSpec(...)`; a backbone file
(`pcl/models/<name>.py`) with `DECLARATIONS = (BackboneSpec(...), ...)`. Everything else in the suite (config
validation and run keys, the scripts' grids, tables, generated docs, the launcher's cost, the epoch line, the tests)
derives from these declarations (`pcl.registry`), so adding a method or a backbone is one file.

Why a literal at the top of the file: planning, status and the analysis must not import torch (seconds and a
gigabyte per command), yet a method is an `nn.Module` and its file imports torch. So the registry reads the
declaration from the file's syntax tree (`read_declaration`) and evaluates only that expression, which may contain
nothing but the constructors below and literals: the rest of the file never runs on the records side. The training
side imports the file as usual and uses the very same object.
"""
from __future__ import annotations

import ast
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: an option's value types, as declared (`Option.kind`), inferred from the default when not given
KINDS = ("bool", "int", "float", "str", "path", "any")
#: how a time constant of the paper's schedule follows a shorter run (pcl.schema.TIME_SCALES)
TIME_CONSTANTS = ("epochs", "ema_decay")
#: the number of peers m a multi-network method trains unless a run says otherwise: the config key `peers` holds it,
#: so a method's own `peers` option must default to it (a declared 2 was documented but 3 trained)
DEFAULT_PEERS = 3
#: what a head is: a trained peer, a temporal mean of another head, an ensemble of heads, anything else
HEAD_ROLES = ("peer", "temporal_mean", "ensemble", "network", "frozen")


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class Option:
    """One option of a method: name, default, meaning, and the checks a config value must pass.

    kind: the value's type (inferred from the default; "path" for a file path, "any" for any JSON value).
    choices: the allowed values of a string option. minimum / maximum: bounds of a number (`exclusive_minimum`:
    the minimum itself is not allowed, e.g. a temperature > 0). allow_none: None is a valid value (default: when the
    default is None). time_constant: a constant of the paper's 300-epoch schedule that keeps its share of a shorter
    run unless set explicitly ("epochs": a length in epochs; "ema_decay": a per-step decay, its window in steps).
    neutral: the value that computes what the method computed before the option existed; at that value the option is
    left out of the run_key (options added after the first run_key schema). disagreement: where the public reference
    codes choose differently, `(other value, what each means)`: listed in docs/methods.md. infra: the option is
    where a run finds something (a file), not what it computes: never in the run_key or the record.
    acts_only_with: when the option computes anything at all, `({other option: (its values, ...), ...}, ...)`: when
    every option of one of these conditions has one of its values; otherwise it takes the value it has unset, so
    that the same training keeps one run_key (pcl.schema), and a script refuses it given where it acts in no run.
    names: a config key whose values the option's value names (kd's teacher_backbone: "backbone"), checked by
    that key's check.
    """

    name: str
    default: Any
    doc: str
    kind: str = ""
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    allow_none: bool | None = None
    time_constant: str | None = None
    neutral: Any = UNSET
    disagreement: tuple[Any, str] | None = None
    infra: bool = False
    acts_only_with: tuple[dict[str, tuple[Any, ...]], ...] = ()
    names: str | None = None

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", _kind_of(self.default))
        if self.allow_none is None:
            object.__setattr__(self, "allow_none", self.default is None)
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.time_constant is not None and self.time_constant not in TIME_CONSTANTS:
            raise ValueError(f"option {self.name!r}: time_constant {self.time_constant!r} is not one of "
                             f"{', '.join(TIME_CONSTANTS)}")

    @property
    def allowed(self) -> str:
        """What a value must be, in words (error messages, docs)."""
        if self.choices:
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.kind == "bool":
            text = "True or False"
        elif self.kind in ("int", "float"):
            text = "an integer" if self.kind == "int" else "a finite number"
            if self.minimum is not None and self.maximum is not None:
                low = "(" if self.exclusive_minimum else "["
                text += f" in {low}{self.minimum:g}, {self.maximum:g}]"
            elif self.minimum is not None:
                text += f" {'>' if self.exclusive_minimum else '>='} {self.minimum:g}"
            elif self.maximum is not None:
                text += f" <= {self.maximum:g}"
        elif self.kind in ("str", "path"):
            text = "a string" if self.kind == "str" else "a file path"
        else:
            text = "a JSON value (string, number, bool, list, dict or None)"
        return text + (" or None" if self.allow_none and self.kind != "any" else "")

    def check(self, value: Any) -> Any:
        """The value normalized (ints accepted for floats), or ValueError saying what is allowed."""
        if value is None and self.allow_none:
            return None
        bad = ValueError(f"must be {self.allowed}")
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise bad
        elif self.kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise bad
            if self.kind == "int" and not isinstance(value, numbers.Integral):
                raise bad
            if not math.isfinite(value):
                raise bad
            value = int(value) if self.kind == "int" else float(value)
            if self.minimum is not None and (value < self.minimum or (self.exclusive_minimum
                                                                       and value == self.minimum)):
                raise bad
            if self.maximum is not None and value > self.maximum:
                raise bad
        elif self.kind in ("str", "path"):
            if not isinstance(value, str):
                raise bad
        if self.choices and value not in self.choices:
            raise bad
        return value


def _kind_of(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, numbers.Integral):
        return "int"
    if isinstance(default, numbers.Real):
        return "float"
    if isinstance(default, str):
        return "str"
    return "any"


@dataclass(frozen=True)
class Head:
    """A head the method evaluates every epoch (`Method.eval_heads`), by name; `{j}` in a name stands for peer
    j = 1..m (e.g. "peer{j}"). role: peer (a trained peer; their diversity is logged), temporal_mean (a temporal
    mean of head `mean_of`; its train error is that head's), ensemble, network, frozen. doc: what it is (docs)."""

    name: str
    role: str
    doc: str = ""
    mean_of: str | None = None

    def __post_init__(self) -> None:
        if self.role not in HEAD_ROLES:
            raise ValueError(f"head {self.name!r}: role {self.role!r} is not one of {', '.join(HEAD_ROLES)}")
        if (self.role == "temporal_mean") != (self.mean_of is not None):
            raise ValueError(f"head {self.name!r}: a temporal_mean head names the head it averages (mean_of), "
                             "no other head does")

    def names(self, peers: int | None) -> list[str]:
        """The concrete head names for m = `peers` (one name when the head is not per peer)."""
        if "{j}" not in self.name:
            return [self.name]
        return [self.name.format(j=j) for j in range(1, (peers or 1) + 1)]


@dataclass(frozen=True)
class MethodSpec:
    """Everything the suite needs to know about a method without building it.

    name: the config value (`method=NAME`). display: its name in tables and figures. citation: where it comes
    from. trains / deploys: what it trains and deploys, in words ({peers} and {backbone} are filled in docs).
    heads: its heads (see Head). deployed: the deployed head with the default options. views: the views of each
    image a step takes (a number, or the name of the option that sets it, e.g. "peers"). options: its options.
    relative_cost: time of a training step relative to the baseline's on the same backbone (the launcher's
    estimate where bench/epoch_times.csv has no measured row). tables: the paper's tables (script names of
    experiments/registry.py) whose default grid includes it, in the order of their columns via `order`.
    in_paper: False for a method the paper does not run: no default grid includes it (name it with `method=`).
    distills: it has ramped-up distillation terms (the ramp-up weight is logged). frozen_note: what it holds
    without training it (docs). notes: anything else a reader of docs/methods.md should know.
    """

    name: str
    display: str
    citation: str
    trains: str
    deploys: str
    heads: tuple[Head, ...]
    deployed: str
    options: tuple[Option, ...] = ()
    views: int | str = 1
    relative_cost: float = 1.0
    tables: tuple[str, ...] = ()
    order: int = 100
    in_paper: bool = True
    distills: bool = True
    frozen_note: str = ""
    notes: str = ""

    def __post_init__(self) -> None:
        names = [o.name for o in self.options]
        if len(set(names)) != len(names):
            raise ValueError(f"method {self.name!r} declares an option twice")
        if not self.in_paper and self.tables:
            raise ValueError(f"method {self.name!r} is not in the paper but lists tables {self.tables}")
        if self.relative_cost <= 0:
            raise ValueError(f"method {self.name!r}: relative_cost must be > 0")
        options = {o.name: o for o in self.options}
        if "peers" in options and options["peers"].default != DEFAULT_PEERS:
            raise ValueError(f"method {self.name!r}: option 'peers' defaults to {options['peers'].default!r}, but m "
                             f"comes from the config key peers (default {DEFAULT_PEERS}; a run sets peers=N): declare "
                             f"Option(\"peers\", {DEFAULT_PEERS}, ...)")
        for option in self.options:
            for condition in option.acts_only_with:
                if not isinstance(condition, dict) or not condition:
                    raise ValueError(f"method {self.name!r}: option {option.name!r}: each acts_only_with condition "
                                     "is a dict of other options to a tuple of their values")
                for other, values in condition.items():
                    if other not in options or other == option.name or not isinstance(values, tuple) or not values:
                        raise ValueError(f"method {self.name!r}: option {option.name!r}: acts_only_with names "
                                         f"{other!r}, which must be another option of the method, with a tuple of "
                                         "its values")
                    for value in values:
                        try:
                            options[other].check(value)
                        except ValueError as err:
                            raise ValueError(f"method {self.name!r}: option {option.name!r}: acts_only_with "
                                             f"{other}={value!r}: {err}") from None

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)

    @property
    def defaults(self) -> dict[str, Any]:
        """Each option's default (the method's own options: backbone, num_classes and dropout are the run's)."""
        return {o.name: o.default for o in self.options}

    @property
    def neutral_options(self) -> dict[str, Any]:
        return {o.name: o.neutral for o in self.options if o.neutral is not UNSET}

    @property
    def file_options(self) -> tuple[str, ...]:
        """The options that name a file the method reads (`kind="path"`): in a run_key by the file's digest."""
        return tuple(o.name for o in self.options if o.kind == "path")

    @property
    def time_constants(self) -> dict[str, str]:
        return {o.name: o.time_constant for o in self.options if o.time_constant}

    def head(self, name: str) -> Head | None:
        """The declared head a concrete head name belongs to ("mean_peer2" -> Head("mean_peer{j}", ...))."""
        for head in self.heads:
            if head.name == name or ("{j}" in head.name and _matches(head.name, name)):
                return head
        return None

    def trained_head_of(self, name: str) -> str:
        """The head whose training logits stand for `name`: a temporal mean's averaged head, else itself."""
        head = self.head(name)
        if head is None or head.mean_of is None:
            return name
        if "{j}" in head.name:
            prefix, suffix = head.name.split("{j}")
            return head.mean_of.format(j=name[len(prefix):len(name) - len(suffix) or None])
        return head.mean_of


def _matches(pattern: str, name: str) -> bool:
    prefix, suffix = pattern.split("{j}")
    middle = name[len(prefix):len(name) - len(suffix) if suffix else None]
    return (name.startswith(prefix) and name.endswith(suffix) and middle.isascii() and middle.isdigit()
            and not middle.startswith("0"))


@dataclass(frozen=True)
class BackboneSpec:
    """Everything the suite needs to know about a backbone without building it.

    name: the config value. display: its name in tables. builder: the function of the same file that builds it
    (`builder(num_classes)` or `builder(num_classes, dropout=p)`). citation: where it comes from. datasets: the
    datasets it is built for ("cifar10", "cifar100", "imagenet", "synthetic"). params: declared parameter counts of
    the plain network, `{num_classes: count}` (a test builds it and compares). split: where the shared low-level
    layers end and a peer's branch begins (multi-branch methods). init: its initialisation, in words. dropout:
    the zoo's dropout probability (None: no dropout layer). revision: bump it when the definition changes, so the
    run_keys of its runs change with it. relative_cost: time of a baseline step relative to resnet32's on the same
    dataset's shapes (the launcher's estimate without a measured row). tables / order: the paper's tables whose
    default grid has it as a row, in `order`. in_paper: False for backbones the paper does not use.
    """

    name: str
    display: str
    builder: str
    citation: str
    datasets: tuple[str, ...]
    params: dict[int, int]
    split: str
    init: str
    dropout: float | None = None
    revision: int = 1
    relative_cost: float = 1.0
    tables: tuple[str, ...] = ()
    order: int = 100
    in_paper: bool = True

    def __post_init__(self) -> None:
        if not self.in_paper and self.tables:
            raise ValueError(f"backbone {self.name!r} is not in the paper but lists tables {self.tables}")
        if self.relative_cost <= 0:
            raise ValueError(f"backbone {self.name!r}: relative_cost must be > 0")


#: the names a declaration may use: its constructors (and the literals Python writes as constants)
CONSTRUCTORS: dict[str, Any] = {"MethodSpec": MethodSpec, "Option": Option, "Head": Head,
                                "BackboneSpec": BackboneSpec}
_ALLOWED_NODES = (ast.Expression, ast.Call, ast.keyword, ast.Constant, ast.Tuple, ast.List, ast.Dict, ast.Name,
                  ast.Load, ast.UnaryOp, ast.USub, ast.UAdd, ast.BinOp, ast.Add, ast.Sub, ast.Mult, ast.Div)


class DeclarationError(ValueError):
    """A declaration that cannot be read: missing, or an expression beyond constructors and literals."""


def read_declaration(path: str | Path, variable: str) -> Any:
    """The value assigned to `variable` at the top level of the Python file `path`, evaluated without running the
    file: only calls of CONSTRUCTORS and literals are allowed in it (DeclarationError naming the file otherwise)."""
    path = Path(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) and node.value is not None else []
        if any(isinstance(t, ast.Name) and t.id == variable for t in targets):
            expression = ast.Expression(node.value)  # type: ignore[union-attr]
            for part in ast.walk(expression):
                if not isinstance(part, _ALLOWED_NODES) or (isinstance(part, ast.Name)
                                                            and part.id not in CONSTRUCTORS):
                    where = getattr(part, "lineno", node.lineno)
                    raise DeclarationError(
                        f"{path.name}:{where}: {variable} may hold only {', '.join(CONSTRUCTORS)} calls and "
                        f"literals (found {type(part).__name__}"
                        + (f" {part.id!r}" if isinstance(part, ast.Name) else "") + ")")
            code = compile(ast.fix_missing_locations(expression), str(path), "eval")
            return eval(code, {"__builtins__": {}}, dict(CONSTRUCTORS))  # noqa: S307 - checked above
    raise DeclarationError(f"{path.name}: no top-level {variable} = ... declaration")


__all__ = ["DEFAULT_PEERS", "BackboneSpec", "DeclarationError", "Head", "MethodSpec", "Option", "UNSET",
           "read_declaration"]
