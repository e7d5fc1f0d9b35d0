"""What a method or a backbone declares about itself, and how the records side reads it without importing torch.

A method file (`pcl/methods/<name>.py`) starts with `DECLARATION = MethodSpec(...)`; a backbone file
(`pcl/models/<name>.py`) with `DECLARATIONS = (BackboneSpec(...), ...)`. Everything else in the suite (config
validation and run keys, the scripts' grids, tables, generated docs, the launcher's cost, the epoch line, the tests)
derives from these declarations (`pcl.registry`), so adding a method or a backbone is one file.

Why a literal at the top of the file: planning, status and the analysis must not import torch (seconds and a
gigabyte per command), yet a method is an `nn.Module` and its file imports torch. So the registry reads the
declaration from the file's syntax tree (`read_declaration`) and evaluates only that expression, node by node, which
may contain nothing but the constructors below, literals and + - * / of numbers: the rest of the file never runs on
the records side. The training side imports the file as usual and uses the very same object. The constructors check
every field, and a mistake is a DeclarationError naming the file and line (docs/extending.md lists the checks).
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import keyword
import math
import numbers
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pcl.config_checks import did_you_mean

#: an option's value types, as declared (`Option.kind`), inferred from the default when not given
KINDS = ("bool", "int", "float", "str", "path", "any")
#: how a time constant of the paper's schedule follows a shorter run (pcl.schema.TIME_SCALES)
TIME_CONSTANTS = ("epochs", "ema_decay")
#: the number of peers m a multi-network method trains unless a run says otherwise: the config key `peers` holds it,
#: so a method's own `peers` option must default to it (a declared 2 was documented but 3 trained)
DEFAULT_PEERS = 3
#: what a head is: a trained peer, a temporal mean of another head, an ensemble of heads, anything else
HEAD_ROLES = ("peer", "temporal_mean", "ensemble", "network", "frozen")
#: the datasets a run can use (pcl.recipes holds their classes and recipes); a backbone declares those it is built for
DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "imagenet", "synthetic")
#: the paper's tables whose default grid is built from the declarations (`tables=`; the scripts experiments/NAME.py)
#: -> the datasets that grid runs on (the script refuses others; a backbone in the table is declared for one of them)
GRID_TABLES: dict[str, tuple[str, ...]] = {"table2": ("cifar10", "cifar100"), "imagenet": ("imagenet",),
                                           "two_stage": ("cifar10", "cifar100")}


#: what a field's type is, in words (_check_fields)
_TYPE_WORDS = {str: "a string", bool: "True or False", int: "an integer", float: "a number", tuple: "a tuple (...)",
               dict: "a dict {...}", type(None): "None"}
#: keyword arguments every method's class receives from the run (pcl.methods.build_method): no option's name
RUN_ARGUMENTS = ("backbone", "num_classes", "dropout")


def _check_fields(owner: str, spec: Any, types: dict[str, tuple[type, ...]]) -> None:
    """Each named field of `spec` of one of its types (a bool is no integer or number here); ValueError naming
    the owner, the field, its value and what it must be. Without it, a wrong type passed the declaration and broke
    a command elsewhere (an `order` of "6" the registry's sort, with no file named)."""
    for field, allowed in types.items():
        value = getattr(spec, field)
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            words = " or ".join(_TYPE_WORDS[t] for t in allowed)
            raise ValueError(f"{owner}: {field}={value!r} must be {words}")


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_cost(owner: str, cost: Any) -> None:
    if not (_finite_number(cost) and cost > 0):
        raise ValueError(f"{owner}: relative_cost={cost!r} must be a finite number > 0")


def _check_identifier(owner: str, what: str, name: Any) -> None:
    """A name the suite uses as a config value, a key or part of a file name: an ASCII identifier, no keyword (a
    method named None could only be selected as the string \"None\")."""
    if not (isinstance(name, str) and name.isidentifier() and name.isascii() and not keyword.iskeyword(name)
            and name not in ("None", "True", "False")):
        raise ValueError(f"{owner}: {what} {name!r} must be a Python identifier of ASCII letters, digits and _ "
                         "(no keyword)")


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
        _check_identifier("an option", "name", self.name)
        owner = f"option {self.name!r}"
        if self.name in RUN_ARGUMENTS:
            raise ValueError(f"{owner}: every method is given {', '.join(RUN_ARGUMENTS)} by the run; name the option "
                             "otherwise")
        if not self.kind:
            object.__setattr__(self, "kind", _kind_of(self.default))
        if self.allow_none is None:
            object.__setattr__(self, "allow_none", self.default is None)
        _check_fields(owner, self, {"doc": (str,), "kind": (str,), "choices": (tuple,), "exclusive_minimum": (bool,),
                                    "allow_none": (bool,), "infra": (bool,), "acts_only_with": (tuple,),
                                    "time_constant": (str, type(None)), "names": (str, type(None)),
                                    "disagreement": (tuple, type(None))})
        if self.kind not in KINDS:
            raise ValueError(f"{owner}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        for bound in ("minimum", "maximum"):
            value = getattr(self, bound)
            if value is not None and not _finite_number(value):
                raise ValueError(f"{owner}: {bound}={value!r} must be a finite number")
            if value is not None and self.kind not in ("int", "float"):  # e.g. a default written "150"
                raise ValueError(f"{owner}: {bound}={value!r} bounds a number, but the option is {self.kind}"
                                 f" (its default {self.default!r}); a number option has a number default")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"{owner}: minimum {self.minimum!r} is above maximum {self.maximum!r}")
        if self.disagreement is not None and not (len(self.disagreement) == 2
                                                  and isinstance(self.disagreement[1], str)):
            raise ValueError(f"{owner}: disagreement must be (the other codes' value, what each means)")
        if self.time_constant is not None and self.time_constant not in TIME_CONSTANTS:
            raise ValueError(f"{owner}: time_constant {self.time_constant!r} is not one of "
                             f"{', '.join(TIME_CONSTANTS)}")
        if self.time_constant is not None and (self.kind not in ("int", "float") or self.default is None):
            # a shorter run scales the default: a string or None broke every plan of fewer epochs
            raise ValueError(f"{owner}: a time_constant is a number: an int or float option with a number default")
        # a default or neutral value its own check refuses would be refused in every run that leaves it unset
        for what, value in (("default", self.default), ("neutral", self.neutral)):
            if value is not UNSET:
                try:
                    self.check(value)
                except ValueError as err:
                    raise ValueError(f"option {self.name!r}: its {what} {value!r} {err}") from None

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
        # a concrete name ("peer2") is the pattern with j put in: one {j} at most, the rest an identifier
        if not (isinstance(self.name, str) and self.name.count("{j}") <= 1
                and self.name.replace("{j}", "1").isidentifier() and self.name.isascii()):
            raise ValueError(f"head {self.name!r}: a head's name is an identifier of ASCII letters, digits and _, "
                             "with at most one {j} for the peer's number (e.g. peer{j})")
        _check_fields(f"head {self.name!r}", self, {"doc": (str,), "mean_of": (str, type(None))})
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
        _check_identifier("a method", "name", self.name)
        owner = f"method {self.name!r}"
        _check_fields(owner, self, {"display": (str,), "citation": (str,), "trains": (str,), "deploys": (str,),
                                    "heads": (tuple,), "deployed": (str,), "options": (tuple,), "views": (int, str),
                                    "tables": (tuple,), "order": (int,), "in_paper": (bool,), "distills": (bool,),
                                    "frozen_note": (str,), "notes": (str,)})
        if not all(isinstance(o, Option) for o in self.options):
            raise ValueError(f"{owner}: options must be a tuple of Option(...)")
        names = [o.name for o in self.options]
        if len(set(names)) != len(names):
            raise ValueError(f"{owner} declares an option twice")
        _check_tables("method", self.name, self.tables, self.in_paper)
        _check_cost(owner, self.relative_cost)
        options = {o.name: o for o in self.options}
        self._check_heads(options)
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

    def _check_heads(self, options: dict[str, Option]) -> None:
        """The heads are named once each; the deployed head, each temporal mean's averaged head and `views` name
        what every run of the method has (a wrong name was found only when a run evaluated, or never: a deployed
        head no run has gave runs without their headline number)."""
        owner = f"method {self.name!r}"
        if not self.heads or not all(isinstance(h, Head) for h in self.heads):
            raise ValueError(f"{owner}: heads must be a tuple of Head(...), at least one (a tuple of one: (Head(...),))")
        head_names = [h.name for h in self.heads]
        if len(set(head_names)) != len(head_names):
            raise ValueError(f"{owner} declares a head twice")
        self._check_every_run_has("deployed", self.deployed, options)
        for head in self.heads:
            if head.mean_of is None:
                continue
            what = f"head {head.name!r}: mean_of"
            if "{j}" in head.name:  # peer j's temporal mean averages peer j
                if head.mean_of not in head_names or "{j}" not in head.mean_of:
                    raise ValueError(f"{owner}: {what}={head.mean_of!r} must be another per-peer head ({{j}} in its "
                                     f"name) of {', '.join(head_names)}")
            else:
                self._check_every_run_has(what, head.mean_of, options)
            if head.mean_of == head.name or self.head(head.mean_of.replace("{j}", "1")).role == "temporal_mean":
                raise ValueError(f"{owner}: {what}={head.mean_of!r} must be a trained head, not a temporal mean")
        views = self.views
        counts = [o.name for o in options.values() if _at_least_one(o)]
        if not ((isinstance(views, int) and views >= 1) or views in counts):
            raise ValueError(f"{owner}: views={views!r} must be a number >= 1 or the name of one of its integer "
                             f"options whose every value is >= 1 ({', '.join(counts) or 'it has none'})")

    def _check_every_run_has(self, what: str, name: str, options: dict[str, Option]) -> None:
        """`name` is a concrete head every run of the method has: a declared head, peer j's within the fewest
        peers its `peers` option allows (one, without the option)."""
        head = self.head(name) if isinstance(name, str) and "{j}" not in name else None
        if head is None:
            raise ValueError(f"method {self.name!r}: {what}={name!r} is none of its heads "
                             f"({', '.join(h.name for h in self.heads)}; a concrete name: peer1 for peer{{j}})")
        if "{j}" in head.name:
            prefix, suffix = head.name.split("{j}")
            j = int(name[len(prefix):len(name) - len(suffix)])
            fewest = options["peers"].minimum if "peers" in options and options["peers"].minimum else 1
            if j > fewest:
                raise ValueError(f"method {self.name!r}: {what}={name!r} is missing from a run of {fewest:g} "
                                 f"peer(s) (the least its options allow): name a head every run has, e.g. "
                                 f"{head.name.format(j=1)}")

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
        _check_identifier("a backbone", "name", self.name)
        owner = f"backbone {self.name!r}"
        _check_fields(owner, self, {"display": (str,), "builder": (str,), "citation": (str,), "split": (str,),
                                    "init": (str,), "tables": (tuple,), "order": (int,), "in_paper": (bool,)})
        _check_tables("backbone", self.name, self.tables, self.in_paper)
        _check_cost(owner, self.relative_cost)
        if not isinstance(self.datasets, tuple) or not self.datasets or not set(self.datasets) <= set(DATASETS):
            raise ValueError(f"backbone {self.name!r}: datasets={self.datasets!r} must be a tuple of some of "
                             f"{', '.join(DATASETS)}")
        if not isinstance(self.params, dict) or not self.params or not all(
                _positive_int(k) and _positive_int(v) for k, v in self.params.items()):
            raise ValueError(f"backbone {self.name!r}: params must map a number of classes to the parameter count "
                             "of the network built for it, e.g. {100: 470_000} (both integers > 0)")
        if self.dropout is not None and not (isinstance(self.dropout, (int, float))
                                             and not isinstance(self.dropout, bool) and 0 <= self.dropout < 1):
            raise ValueError(f"backbone {self.name!r}: dropout={self.dropout!r} must be a number in [0, 1) or None")
        if not _positive_int(self.revision):
            raise ValueError(f"backbone {self.name!r}: revision={self.revision!r} must be an integer >= 1")
        if not (isinstance(self.builder, str) and self.builder.isidentifier()):
            raise ValueError(f"backbone {self.name!r}: builder={self.builder!r} must name a function of its file")
        for table in self.tables:  # a grid takes the table's backbones on its datasets: one built for none is left out
            if not set(GRID_TABLES[table]) & set(self.datasets):
                raise ValueError(f"backbone {self.name!r}: tables has {table}, whose grid runs on "
                                 f"{' or '.join(GRID_TABLES[table])}, which datasets={self.datasets!r} does not have")


def _at_least_one(option: Option) -> bool:
    """Every value the integer option takes is >= 1 (a number of views): by its bounds or choices; `peers` by the
    config key's own (m >= 2)."""
    if option.kind != "int" or option.allow_none:
        return False
    if option.name == "peers" or (option.choices and min(option.choices) >= 1):
        return True
    return option.minimum is not None and (option.minimum >= 1 or (option.exclusive_minimum and option.minimum >= 0))


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_tables(kind: str, name: str, tables: Any, in_paper: bool) -> None:
    """A declaration's `tables`: a tuple of GRID_TABLES (another name put it in no grid, silently); none outside
    the paper."""
    if not isinstance(tables, tuple) or not set(tables) <= set(GRID_TABLES):
        raise ValueError(f"{kind} {name!r}: tables={tables!r} must be a tuple of some of {', '.join(GRID_TABLES)} "
                         "(the tables whose default grid is built from the declarations)")
    if not in_paper and tables:
        raise ValueError(f"{kind} {name!r} is not in the paper but lists tables {tables}")


#: the names a declaration may use: its constructors (and the literals Python writes as constants)
CONSTRUCTORS: dict[str, Any] = {"MethodSpec": MethodSpec, "Option": Option, "Head": Head,
                                "BackboneSpec": BackboneSpec}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


class DeclarationError(ValueError):
    """A declaration that cannot be read or is not consistent, named by its file and line: missing, an expression
    beyond constructors and literals, a field that does not exist, a value its constructor refuses."""


def read_declaration(path: str | Path, variable: str) -> Any:
    """The value assigned to `variable` at the top level of the Python file `path`, evaluated without running the
    file: only calls of CONSTRUCTORS and literals (and + - * / of numbers) are allowed in it. Every mistake is a
    DeclarationError naming the file and the line of the call (or literal) at fault."""
    path = Path(path)
    shown = shown_path(path)
    tree = _parse(path)
    found = [node for node in tree.body if _assigns(node, variable)]
    if not found:
        raise DeclarationError(f"{shown}: no top-level {variable} = ... declaration")
    if len(found) > 1:  # importing the file binds the last one: the training side would not use what was checked
        raise DeclarationError(f"{shown}:{found[1].lineno}: {variable} is assigned again (first at line "
                               f"{found[0].lineno}); keep one")
    node = found[0]
    try:
        return _evaluate(node.value, (shown, variable), node.lineno)  # type: ignore[attr-defined]
    except RecursionError:
        raise DeclarationError(f"{shown}:{node.lineno}: {variable} is nested too deeply") from None


def shown_path(path: Path) -> str:
    """A declaring file as a user finds it: pcl/methods/NAME.py (the file's name, outside the package)."""
    return "/".join(path.parts[-3:]) if path.parent.parent.name == "pcl" else path.name


def top_level_names(path: str | Path) -> set[str]:
    """The names a Python file defines at the top level (functions, classes, assignments, imports), from its syntax
    tree: a backbone's `builder` must be one of them."""
    names: set[str] = set()
    for node in _parse(Path(path)).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):  # a builder imported from another file
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _parse(path: Path) -> ast.Module:
    """The file's syntax tree, the file decoded as Python decodes it (a coding line, a BOM)."""
    shown = shown_path(path)
    try:
        return ast.parse(importlib.util.decode_source(path.read_bytes()), filename=str(path))
    except SyntaxError as err:
        raise DeclarationError(f"{shown}:{err.lineno or 1}: {err.msg}") from None
    except (UnicodeDecodeError, ValueError, RecursionError, MemoryError) as err:
        raise DeclarationError(f"{shown}: cannot be read as Python source ({type(err).__name__}: {err})") from None


def _assigns(node: ast.stmt, variable: str) -> bool:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
        node, ast.AnnAssign) and node.value is not None else []
    return any(isinstance(t, ast.Name) and t.id == variable for t in targets)


def _evaluate(node: ast.AST, where: tuple[str, str], line: int) -> Any:
    """A declaration's expression, node by node (no eval: nothing but CONSTRUCTORS and literals can run); a
    constructor's refusal named with the line of its call. `where`: (the file as shown, the variable)."""
    line = getattr(node, "lineno", line)

    def fail(text: str, separator: str = ": ") -> DeclarationError:
        return DeclarationError(f"{where[0]}:{line}: {where[1]}{separator}{text}")

    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.Tuple, ast.List)):
        items = [_evaluate(e, where, line) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict) and None not in node.keys:
        out = {}
        for k, v in zip(node.keys, node.values):
            key = _evaluate(k, where, line)  # type: ignore[arg-type]
            if not isinstance(key, (str, int, float)):  # a list key is unhashable; any other is no name or count
                raise fail(f"a dict key is a string or a number (found {key!r})")
            out[key] = _evaluate(v, where, line)
        return out
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY or isinstance(node, ast.BinOp) and type(
            node.op) in _BINARY:
        operands = [node.operand] if isinstance(node, ast.UnaryOp) else [node.left, node.right]
        values = [_evaluate(o, where, line) for o in operands]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise fail("arithmetic is for numbers only")
        try:
            return (_UNARY if isinstance(node, ast.UnaryOp) else _BINARY)[type(node.op)](*values)
        except ArithmeticError as err:
            raise fail(str(err)) from None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CONSTRUCTORS:
        if any(k.arg is None for k in node.keywords) or any(isinstance(a, ast.Starred) for a in node.args):
            raise fail(f"{node.func.id}(...) takes its fields written out, without * or ** arguments")
        constructor = CONSTRUCTORS[node.func.id]
        fields = [f.name for f in dataclasses.fields(constructor)]
        seen: set[str] = set()
        for k in node.keywords:
            if k.arg not in fields or k.arg in seen:  # a repeated keyword: ast parses it, Python refuses to import
                line = k.lineno
                raise fail(f"{node.func.id} has no field {k.arg!r} (its fields: {', '.join(fields)})"
                           f"{did_you_mean(k.arg, fields)}" if k.arg not in fields
                           else f"the field {k.arg!r} is given twice")
            seen.add(k.arg)  # type: ignore[arg-type]
        args = [_evaluate(a, where, line) for a in node.args]
        kwargs = {k.arg: _evaluate(k.value, where, line) for k in node.keywords}
        try:
            return constructor(*args, **kwargs)
        except (TypeError, ValueError, ArithmeticError) as err:
            raise fail(f"{node.func.id}: {err}") from None
    found = (f"a call of {ast.unparse(node.func)}" if isinstance(node, ast.Call)
             else f"the operator {type(node.op).__name__}" if isinstance(node, (ast.BinOp, ast.UnaryOp))
             else type(node).__name__ + (f" {node.id!r}" if isinstance(node, ast.Name) else ""))
    raise fail(f"may hold only {', '.join(CONSTRUCTORS)} calls and literals, and + - * / of numbers "
               f"(found {found})", " ")


__all__ = ["DATASETS", "DEFAULT_PEERS", "GRID_TABLES", "RUN_ARGUMENTS", "BackboneSpec", "DeclarationError", "Head",
           "MethodSpec", "Option", "UNSET", "read_declaration", "shown_path", "top_level_names"]
