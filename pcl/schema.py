"""The one definition of a run: every config key with its default, type, allowed values, unit and whether it is part
of the run_key; validation and the run_key itself. The per-dataset recipes live in pcl.recipes, the value checks in
pcl.config_checks; both are re-exported here, the one entry point for a run config.

Everything that handles a run config derives from `KEYS` and `RECIPES`: validation (`normalize_run_config`), the
run_key (`run_key`), the Sacred config scope and `print_config` (experiments/common.py), `plan`'s columns, the
runner's input (pcl.runner.run takes a normalized config) and the engine's `Recipe` defaults. Adding a config key
is one `Key(...)` line here (plus where it is used). Records layer: imports no torch (the declarations are read by pcl.registry).

A key's value at its `neutral` (the behaviour from before the key existed) is left out of the run_key, so adding a
key never moves the run_keys of runs that it does not change. `KEY_SCHEMA` changes only when the meaning of an
existing key changes; then every run_key changes with it (README, "Skip, resume, preemption").
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from pcl import registry
from pcl.declarations import DEFAULT_PEERS, DeclarationError
from pcl.fsio import input_file_problem, input_file_sha256
# re-exported: pcl.schema is the one entry point for a run config (the recipes and value checks live beside it)
from pcl.config_checks import (MAX_SEED, ConfigError, _seeds, boolean, choice, did_you_mean, epochs_list, folder,
                               integer, mapping, real, text)  # noqa: F401
from pcl.recipes import (CIFAR_RECIPE, DATASETS, DEVICE_RESIDENT, IMAGENET_RECIPE, NUM_CLASSES, RECIPES,
                         REFERENCE_EPOCHS, REFERENCE_STEPS, SPLIT_SIZES, TIME_SCALES, TRAIN_SIZES, DatasetRecipe,
                         dataset_defaults, recipe_of, scale_ema_decay, scale_rampup, scaled_milestones,
                         steps_per_epoch, time_constant_names, train_split_size)  # noqa: F401

KEY_SCHEMA = 1  # bump when the meaning of a config key changes: every run_key changes with it
BATCH_NORMS = ("local", "sync")  # BatchNorm statistics under DDP: each process's batch, or the global batch
FAST_PATHS = ("auto", "eager", "graph")  # how a step runs (pcl.fastpath); resolve_fast_path says what auto picks
PRECISIONS = ("fp32", "tf32", "bf16")  # tf32: TF32 matmul/cuDNN; fp32 has it off (pcl.fastpath.set_precision)
TEACHER_PATH_OPTION = "teacher_path"  # kd's option; resolved from `teacher_run_key` at run time
#: what `run_key` computes: the first 16 hex digits of a SHA-256 (a teacher_run_key must look like one)
RUN_KEY_PATTERN = r"[0-9a-f]{16}"
GROUPS = ("experiment", "recipe", "data", "infra", "driver")
_UNSET = object()
#: MongoDB's rules for a database name (what `db_name` and a URL's database must satisfy)
MONGO_DB_NAME_RULE = "a MongoDB database name: 1-63 characters, none of / \\ . space \" $ * < > : | ?"


def _datasets():
    return DATASETS


# ---- the keys ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Key:
    """One config key. `default` None on a recipe key means "the dataset's recipe" (RECIPES).

    group: experiment/recipe/data (part of the run_key: `identity`), infra (how and where a run runs; not in the
    run_key), driver (the grid driver's: seeds and the store; never in a run config).
    """

    name: str
    group: str
    default: Any
    spec: tuple[Callable[[str, Any], Any], str]
    doc: str
    unit: str = ""
    example: Any = None  # another valid value (documentation and tests)
    neutral: Any = _UNSET  # value that hashes as if the key did not exist (keys added after KEY_SCHEMA 1)
    derived: bool = False  # computed by normalization (never set by a user; not in the Sacred scope)

    @property
    def identity(self) -> bool:
        return self.group in ("experiment", "recipe", "data")

    @property
    def type(self) -> str:
        return str(self.spec[1])

    @property
    def example_other(self) -> Any:
        return self.example

    def check(self, value: Any, as_key: str | None = None) -> Any:
        """The value normalized, or ConfigError; `as_key` names the key the user set when it is not this one (a
        script's teacher_backbone is checked as a backbone, under its own name)."""
        return self.spec[0](as_key or self.name, value)


KEYS: dict[str, Key] = {k.name: k for k in (
    # what the experiment is (these make the run_key)
    Key("dataset", "experiment", "cifar100", choice(_datasets), "dataset", example="cifar10"),
    Key("backbone", "experiment", "resnet32", choice(registry.backbones), "backbone network", example="wrn20_8"),
    Key("method", "experiment", "pcl", choice(registry.methods), "training method (pcl.registry)", example="dml"),
    Key("options", "experiment", {}, mapping(),
        "method options merged over the method's defaults (docs/methods.md); time constants scale with the run; an "
        "option the others leave without effect (declared in the method's file, Option(acts_only_with=...): e.g. pcl's "
        "ensemble_form with ensemble_teacher=False) takes the value it has unset, so the same training keeps one "
        "run_key; a script refuses one given where it acts in none of its runs",
        example={"temperature": 4.0}),
    Key("peers", "experiment", DEFAULT_PEERS, integer(2, allow_none=True),
        "peers/branches m of the multi-network methods (None for the others)",
        unit="networks", example=4),
    Key("dropout", "experiment", None, real(lambda v: 0 <= v < 1, "a number in [0, 1), or None (the zoo's default)",
                                               allow_none=True),
        "classifier dropout of backbones that have it (None: the zoo's, 0.5 for vgg16; the others have none)",
        unit="probability", example=0.3, neutral=None),
    Key("backbone_revision", "experiment", 1, integer(1),
        "derived: revision of the backbone's definition (declared `revision`); never set it", neutral=1,
        derived=True),
    Key("seed", "experiment", 0, integer(0, maximum=MAX_SEED), "seed of initialisation, data order and augmentation",
        example=1),
    Key("teacher_run_key", "experiment", None,
        text(allow_none=True, pattern=RUN_KEY_PATTERN,
             allowed="None or a run_key: 16 hexadecimal digits, as `plan` lists them"),
        "two-stage KD: the teacher run whose deployed model the student distils from"),
    # the optimisation recipe (docs/config.md, "Per-dataset recipes"); None = the dataset's recipe (RECIPES)
    Key("epochs", "recipe", None, integer(1), "training epochs", unit="epochs", example=10),
    Key("batch_size", "recipe", None, integer(1), "images per step", unit="images", example=64),
    Key("lr", "recipe", 0.1, real(lambda v: v > 0, "a number > 0"), "initial learning rate", example=0.05),
    Key("momentum", "recipe", 0.9, real(lambda v: 0 <= v < 1, "a number in [0, 1)"), "SGD momentum", example=0.8),
    Key("nesterov", "recipe", True, boolean(), "Nesterov momentum", example=False),
    Key("weight_decay", "recipe", None, real(lambda v: v >= 0, "a number >= 0"), "L2 weight decay",
        example=1e-4),
    Key("milestones", "recipe", None, epochs_list(),
        "epochs at which lr *= gamma (None: the recipe's fractions of `epochs`)", unit="epochs", example=[5, 8]),
    Key("gamma", "recipe", 0.1, real(lambda v: 0 < v <= 1, "a number in (0, 1]"), "lr decay factor",
        example=0.2),
    Key("channels_last", "recipe", False, boolean(), "weights and views in channels_last memory format",
        example=True, neutral=False),
    Key("precision", "recipe", "fp32", choice(lambda: PRECISIONS),
        "arithmetic precision: fp32 (TF32 off), tf32 (TF32 matmul/cuDNN), bf16 (autocast)",
        example="bf16"),
    Key("gpus", "recipe", 1, integer(1),
        "data-parallel processes, one GPU each (DDP, pcl.distributed; batch_size is the global batch, split "
        "evenly); started by torchrun or the launcher's multi-task jobs (device=cpu: CPU processes with gloo)",
        unit="processes", example=4, neutral=1),
    Key("batch_norm", "recipe", "local", choice(lambda: BATCH_NORMS),
        "BatchNorm statistics with gpus > 1: local (each process's share of the batch, the usual ImageNet DDP "
        "recipe) or sync (SyncBatchNorm over the global batch; CUDA only)", example="sync", neutral="local"),
    # which data (part of the run_key)
    Key("train_subset", "data", None, integer(1, allow_none=True),
        "train on a seeded random subset of this many training images (None: all)", unit="images",
        example=5000),
    Key("synthetic_classes", "data", 10, integer(2), "synthetic dataset only: classes", example=4),
    Key("synthetic_train_size", "data", 2048, integer(1), "synthetic dataset only: training images",
        unit="images", example=128),
    Key("synthetic_test_size", "data", 512, integer(1), "synthetic dataset only: test images", unit="images",
        example=64),
    Key("data_identity", "data", None, text(allow_none=True),
        "derived from the files read (pcl.tracking): None for the official CIFAR files and synthetic data, else a "
        "checksum of the data; never set it", example="md5:0123456789abcdef", neutral=None, derived=True),
    # how and where it runs (not part of the run_key)
    Key("data_root", "infra", None, folder(allow_none=True), "dataset folder (None: $PCL_DATA_ROOT, else ./data)",
        example="elsewhere"),
    Key("download", "infra", False, boolean(), "download CIFAR through torchvision when missing", example=True),
    Key("device", "infra", "auto", text(pattern=r"auto|cpu|cuda(:\d+)?", allowed="auto, cpu, cuda or cuda:N"),
        "training device", example="cpu"),
    Key("fast_path", "infra", "auto", choice(lambda: FAST_PATHS),
        "how a training step runs: graph (the whole step captured in one CUDA graph and replayed, pcl.fastpath), "
        "eager (kernel by kernel), or auto: graph on one CUDA device with device-resident data (CIFAR, synthetic), "
        "else eager. graph trains 1.8-3.5x faster than eager on an H200 (PCL ResNet-32: 4,525 vs 1,714 images/s, "
        "fp32). Both compute the same function (bit-identical on the CPU for every method, and on that H200 for "
        "baseline and PCL in bf16: bench/RESULTS.md), so it is not part of the run_key", example="eager"),
    Key("deterministic", "infra", False, boolean(),
        "deterministic kernels (no effect on the CPU; on a GPU it can change the last bits)", example=True),
    Key("workers", "infra", 8, integer(0), "ImageNet loader processes", unit="processes", example=0),
    Key("checkpoint_root", "infra", "checkpoints", folder(), "checkpoints under checkpoint_root/run_key/",
        example="elsewhere"),
    Key("force", "infra", False, boolean(), "train a COMPLETED run_key again from scratch", example=True),
    Key("progress", "infra", None, boolean(allow_none=True),
        "progress bars over training and evaluation (None: when stderr is a terminal); without bars a plain line "
        "at least every minute inside an epoch", example=True),
    Key("eval_every", "infra", 1, integer(1),
        "evaluate every head on the test set every this many epochs, and always the last epoch (changes no trained "
        "number)", unit="epochs", example=5),
    Key("experiment", "infra", "", text(), "the script that runs it (set by the driver)", example="table2"),
    Key("label", "infra", "", text(), "the grid cell's name (set by the driver)", example="pcl/resnet32"),
    Key("comment", "infra", "", text(), "a note recorded with each run (Sacred's -c COMMENT)",
        example="first try"),
    Key("run_key", "infra", None, text(allow_none=True), "derived: hash of the identity keys (never set it)",
        derived=True),
    # the grid driver's keys (never in a run config)
    Key("seeds", "driver", [0, 1, 2], (lambda k, v: _seeds(k, v), f"a non-empty list of distinct integers from 0 to {MAX_SEED}"),
        "one run per seed; the paper reports mean +- std over >= 3 seeds", example=[0]),
    Key("results_dir", "driver", "results", folder(), "Sacred file store: always written", example="elsewhere"),
    Key("mongo_url", "driver", None, text(allow_none=True),
        "MongoDB URL (else $PCL_MONGO_URL); never recorded, never printed"),
    Key("db_name", "driver", None, text(allow_none=True, pattern=r'[^/\\. "$*<>:|?\x00]{1,63}',
                                        allowed=f"None or {MONGO_DB_NAME_RULE}"),
        "MongoDB database (None: the URL's, else 'pcl')", example="pcl_tests"),
)}

#: keys of a run config, in record order
RUN_KEYS: tuple[str, ...] = tuple(k for k, key in KEYS.items() if key.group != "driver")
#: keys that do not change what is computed (excluded from the run_key)
INFRA_KEYS: frozenset[str] = frozenset(k for k in RUN_KEYS if not KEYS[k].identity)
#: the driver's keys (seeds and the store): never in a run config or record
DRIVER_KEYS: tuple[str, ...] = tuple(k for k, key in KEYS.items() if key.group == "driver")
STORE_KEYS: frozenset[str] = frozenset({"results_dir", "mongo_url", "db_name"})
SYNTHETIC_KEYS = ("synthetic_classes", "synthetic_train_size", "synthetic_test_size")
#: method options that are infrastructure (a file path resolved from `teacher_run_key`)
INFRA_OPTIONS: frozenset[str] = frozenset(o.name for spec in registry.methods().values() for o in spec.options
                                          if o.infra)  # declared `infra=True` (kd's teacher_path)


def _check_named_keys() -> None:
    """Every option's `names` is a config key (the declarations cannot know the keys: checked here, as the schema is
    imported, with the declaration's file named; it was a traceback in the middle of a plan)."""
    for name, spec in registry.methods().items():
        for option in spec.options:
            if option.names is not None and option.names not in KEYS:
                shown = registry.method_module(name).replace(".", "/") + ".py"
                registry.declaration_failed(DeclarationError(
                    f"{shown}: method {name!r}: option {option.name!r}: names={option.names!r} is no config key "
                    f"(e.g. backbone, method, dataset){did_you_mean(option.names, KEYS)}"))


_check_named_keys()


def defaults() -> dict[str, Any]:
    """Every key's default as the Sacred scope shows it before the dataset is known (recipe keys None)."""
    return {k: copy.deepcopy(key.default) for k, key in KEYS.items()}


# ---- validation ----------------------------------------------------------------------------------------------------
def _check_option(method: str, option: Any, value: Any) -> Any:
    """A method option's value checked against its declaration (pcl.declarations.Option): type, bounds, choices."""
    try:
        return option.check(value)
    except ValueError as err:
        hint = did_you_mean(value, option.choices) if option.choices else ""
        raise ConfigError(f"config key 'options.{option.name}'={value!r} (method {method!r}) is invalid: {err}; "
                          f"default {option.default!r}{hint}") from None


def check_backbone_dataset(backbone: str, dataset: str, as_key: str = "backbone") -> None:
    """A backbone runs on the datasets it declares (an ImageNet network on CIFAR planned fine); ConfigError
    naming the key (`as_key`: e.g. two_stage's teacher_backbone), the value and the backbones allowed."""
    spec = registry.backbone(backbone)
    if dataset not in spec.datasets:
        raise ConfigError(f"config key {as_key!r}={backbone!r} is built for {', '.join(spec.datasets)}, not "
                          f"dataset={dataset!r}; allowed on {dataset}: {', '.join(registry.dataset_backbones(dataset))}")


def normalize_run_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A complete, validated run config with its `run_key`; idempotent (normalizing twice changes nothing).

    Every wrong type, out-of-range value, unknown key, dataset, backbone, method or option raises ConfigError
    naming the key, before anything is trained or recorded. Method options are checked against their declarations
    (pcl.declarations.Option: type, bounds, choices), so nothing is built and no torch is imported.
    """
    raw = dict(raw)
    store_keys = sorted(STORE_KEYS & set(raw))
    if store_keys:
        raise ConfigError(f"config key(s) {', '.join(store_keys)} belong to the store, not to a run config")
    unknown = sorted(set(raw) - set(RUN_KEYS))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(map(repr, unknown))}; known: {', '.join(RUN_KEYS)}")
    given = {k: copy.deepcopy(v) for k, v in raw.items()}
    out: dict[str, Any] = {"dataset": KEYS["dataset"].check(given.get("dataset", KEYS["dataset"].default))}
    recipe = dataset_defaults(out["dataset"])
    for name in RUN_KEYS:
        if name in ("dataset", "run_key", "milestones"):
            continue
        if name in SYNTHETIC_KEYS and out["dataset"] != "synthetic":
            out[name] = None  # only the synthetic dataset reads them: elsewhere None, never in the run_key
            continue
        key = KEYS[name]
        value = given.get(name, key.default)
        if value is None and name in recipe:
            value = recipe[name]
        out[name] = key.check(value)
    milestones = KEYS["milestones"].check(given.get("milestones"))
    out["milestones"] = milestones if milestones is not None else scaled_milestones(out["epochs"],
                                                                                      recipe_of(out["dataset"]))
    method = out["method"]

    # options: the method's defaults, then the given ones; `peers` lives at the top level
    options = out["options"]
    declared = {o.name: o for o in registry.method(method).options}
    method_opts = {name: o.default for name, o in declared.items()}
    unknown = sorted(set(options) - set(method_opts))
    if unknown:
        raise ConfigError(f"config key(s) {', '.join(f'options.{k}' for k in unknown)}: not option(s) of method "
                          f"{method!r}; its options: {', '.join(sorted(method_opts)) or '(none)'}")
    merged = dict(method_opts)
    for key, kind in registry.method(method).time_constants.items():
        merged[key] = TIME_SCALES[kind](merged[key], out)
    unset = dict(merged)  # what each option is when not given
    for key, value in options.items():
        merged[key] = _check_option(method, declared[key], value)
    for key, as_key in checked_as(method).items():
        if merged[key] is not None:
            KEYS[as_key].check(merged[key], as_key=f"options.{key}")
    for key in without_effect(method, merged):  # computes nothing here: the value it has unset, one run_key
        merged[key] = unset[key]
    if "peers" in method_opts:
        out["peers"] = KEYS["peers"].default if out["peers"] is None else out["peers"]
        if "peers" in options and merged["peers"] != out["peers"]:
            raise ConfigError(f"config key 'options.peers'={options['peers']!r} conflicts with "
                              f"peers={out['peers']!r}: set the top-level key `peers`")
        merged["peers"] = out["peers"]
    else:
        out["peers"] = None  # the method has no peers: the value must not split one experiment into several keys
    out["options"] = {k: merged[k] for k in sorted(merged)}
    if out["teacher_run_key"] is not None and TEACHER_PATH_OPTION not in method_opts:
        raise ConfigError(f"config key 'teacher_run_key' is set but method {method!r} has no option "
                          f"{TEACHER_PATH_OPTION!r} to receive the teacher")
    if TEACHER_PATH_OPTION in method_opts and out["teacher_run_key"] is None and merged[TEACHER_PATH_OPTION] is None:
        raise ConfigError(f"config key 'options.{TEACHER_PATH_OPTION}' is required by method {method!r}: the "
                          "deployed.pt of a completed run (or name the teacher run with teacher_run_key)")
    for key, option in declared.items():  # a file the run will read must be there before anything starts
        if option.kind == "path" and merged[key] is not None and not (option.infra
                                                                      and out["teacher_run_key"] is not None):
            problem = input_file_problem(merged[key])
            if problem:
                raise ConfigError(f"config key 'options.{key}'={merged[key]!r} (method {method!r}): {problem}")
    try:
        out["dropout"] = registry.check_dropout(out["backbone"], given.get("dropout"))
    except ValueError as err:
        raise ConfigError(f"config key 'dropout': {err}") from None
    check_backbone_dataset(out["backbone"], out["dataset"])
    out["backbone_revision"] = registry.backbone(out["backbone"]).revision
    if out["nesterov"] and out["momentum"] == 0:
        raise ConfigError("config key 'nesterov'=True needs momentum > 0 (config key 'momentum'=0.0)")
    _check_data_parallel(out)
    _check_together(out, given_milestones=milestones)
    out["run_key"] = run_key(out)
    return {k: out[k] for k in RUN_KEYS}


def checked_as(method: str) -> dict[str, str]:
    """The options of `method` whose value (when not None) names what a config key names, as declared (`names=`,
    e.g. kd's teacher_backbone: "backbone"): checked by that key's check, so the allowed names come from the same
    registry (each a config key: checked as the schema is imported)."""
    return {o.name: o.names for o in registry.method(method).options if o.names}


def acts_only_with(method: str) -> dict[str, tuple[dict[str, tuple[Any, ...]], ...]]:
    """The options of `method` that compute nothing unless other options have given values, as declared
    (`acts_only_with=`: {option: conditions}; pcl.declarations checks what they name)."""
    return {o.name: o.acts_only_with for o in registry.method(method).options if o.acts_only_with}


def without_effect(method: str, options: Mapping[str, Any]) -> dict[str, str]:
    """The options of `method` that the others' values in `options` (all of its options) leave without effect
    (its `acts_only_with`), each with why, in words ("with options.X=... it acts only with X=...")."""
    idle = {}
    for name, conditions in acts_only_with(method).items():
        if any(all(options.get(k) in values for k, values in condition.items()) for condition in conditions):
            continue
        others = list(dict.fromkeys(k for condition in conditions for k in condition))
        needs = " or ".join(" and ".join(f"{k}={values[0]!r}" if len(values) == 1
                                         else f"{k} one of {', '.join(map(repr, values))}"
                                         for k, values in condition.items()) for condition in conditions)
        idle[name] = (f"with {', '.join(f'options.{k}={options.get(k)!r}' for k in others)} it acts only with "
                      f"{needs}")
    return idle


def _check_together(out: Mapping[str, Any], given_milestones: list[int] | None) -> None:
    """Values that are valid alone but wrong together (ConfigError naming the key, the value and the limit).

    - milestones: an LR step at epoch >= `epochs` never happens (the LR would silently never decay). The recipe's
      own milestones scaled to a very short run (e.g. [1, 1] for epochs=1) are accepted: nobody asked for them.
    - train_subset: at most the training split; batch_size: at most the images trained on (every step takes a
      full batch, a smaller split would train no step at all).
    """
    epochs = out["epochs"]
    if given_milestones is not None and given_milestones != scaled_milestones(epochs, recipe_of(out["dataset"])):
        late = [m for m in given_milestones if m >= epochs]
        if late:
            raise ConfigError(f"config key 'milestones'={given_milestones!r} is invalid with epochs={epochs}: "
                              f"every milestone must be < epochs (an LR step at epoch {late[0]} never happens)")
    n_train = train_split_size(out)
    if n_train is None:
        return
    where = (f"synthetic_train_size={n_train}" if out["dataset"] == "synthetic"
             else f"{n_train} training images in {out['dataset']}")
    if out["train_subset"] is not None and out["train_subset"] > n_train:
        raise ConfigError(f"config key 'train_subset'={out['train_subset']!r} is invalid with dataset="
                          f"{out['dataset']!r}: must be at most the training split ({where})")
    images = n_train if out["train_subset"] is None else out["train_subset"]
    if out["batch_size"] > images:
        source = f"train_subset={images}" if out["train_subset"] is not None else where
        raise ConfigError(f"config key 'batch_size'={out['batch_size']!r} is invalid: must be at most the images "
                          f"trained on ({source}); a step takes a full batch")


def _check_data_parallel(out: Mapping[str, Any]) -> None:
    """`gpus`, `batch_norm`, `batch_size` and `fast_path` together (ConfigError naming the key and what is allowed).

    The global batch is split evenly over the processes; SyncBatchNorm needs several processes; the CUDA-graph
    step (pcl.fastpath) is single-process.
    """
    gpus = out["gpus"]
    if gpus > 1 and out["batch_size"] % gpus:
        raise ConfigError(f"config key 'batch_size'={out['batch_size']!r} is invalid with gpus={gpus}: the global "
                          f"batch is split evenly over the processes, so it must be a multiple of {gpus}")
    if gpus > 1 and out["fast_path"] == "graph":
        raise ConfigError(f"config key 'fast_path'={out['fast_path']!r} is invalid with gpus={gpus}: the captured "
                          "step is single-process; allowed with gpus > 1: auto, eager")
    if gpus == 1 and out["batch_norm"] != "local":
        raise ConfigError(f"config key 'batch_norm'={out['batch_norm']!r} is invalid with gpus=1: one process's "
                          "statistics are the global batch's already; allowed: local (or set gpus > 1)")


def resolve_fast_path(fast_path: str, *, cuda: bool, processes: int, device_resident: bool) -> str:
    """The path a run's steps take, "graph" or "eager", for the config key `fast_path`: auto is graph on one CUDA
    device with device-resident data (the case bench/gpu_check.py checked on a GPU), eager elsewhere (the CPU, where
    a graph would only run uncaptured; data-parallel processes; ImageNet's loader on the CPU)."""
    if fast_path != "auto":
        return fast_path
    return "graph" if cuda and processes == 1 and device_resident else "eager"


def planned_fast_path(cfg: Mapping[str, Any]) -> str:
    """The path whose speed a normalized run config trains at, before it runs (the launcher's cost): eager with
    fast_path=eager, else what auto picks. A device other than the CPU (auto included: jobs go to GPU nodes) counts
    as CUDA; an explicit graph where auto is eager (the CPU: uncaptured; a loader decoding on the CPU, which bounds
    the step) is no faster than eager."""
    asked = "eager" if cfg.get("fast_path") == "eager" else "auto"
    return resolve_fast_path(asked, cuda=cfg.get("device", "auto") != "cpu", processes=int(cfg.get("gpus", 1)),
                             device_resident=cfg.get("dataset") in DEVICE_RESIDENT)


def plain(obj: Any) -> Any:
    """Plain dicts and lists, recursively: tuples (Sacred would store {"py/tuple": ...}) and Sacred's read-only
    config containers both become JSON-shaped values."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj



# ---- identity: what makes two runs the same run ------------------------------------------------------------------
def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, no NaN: the same value always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def infra_options(cfg: Mapping[str, Any]) -> frozenset[str]:
    """A teacher file is infrastructure only when `teacher_run_key` names the teacher; a teacher_path given alone
    is the only description of the teacher and stays part of the experiment."""
    return INFRA_OPTIONS if cfg.get("teacher_run_key") else frozenset()


def identity_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a run config that defines the experiment (what the run_key hashes): identity keys, except
    those at their neutral value."""
    out = {k: v for k, v in cfg.items()
           if k not in INFRA_KEYS and not (k in KEYS and KEYS[k].neutral is not _UNSET and v == KEYS[k].neutral)}
    dropped = infra_options(cfg)
    neutral = _method_neutral_options(cfg.get("method"))
    spec = registry.methods().get(cfg.get("method")) if isinstance(cfg.get("method"), str) else None
    files = spec.file_options if spec is not None else ()
    out["options"] = {k: (_file_identity(v) if k in files and isinstance(v, str) else v)
                      for k, v in (cfg.get("options") or {}).items()
                      if k not in dropped and not (k in neutral and v == neutral[k])}
    return out


def _file_identity(path: str) -> dict[str, str]:
    """A file option's part of the identity: its contents' digest, not where it lies (a file changed in place is
    another run, the same file elsewhere the same run; normalize_run_config has checked it is a file;
    a config read back from elsewhere may name one that is gone, which then differs from every file)."""
    try:
        return {"sha256": input_file_sha256(path)}
    except (OSError, ValueError):
        return {"unreadable": path}


def _method_neutral_options(method: Any) -> dict[str, Any]:
    spec = registry.methods().get(method) if isinstance(method, str) else None
    return spec.neutral_options if spec is not None else {}


def run_key(cfg: Mapping[str, Any]) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of the config without infrastructure keys."""
    payload = canonical_json({"schema": KEY_SCHEMA, "config": identity_config(cfg)})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def record_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The config as recorded: the run config without infrastructure options (a teacher file path)."""
    out = {k: v for k, v in cfg.items() if k != "options"}
    out["options"] = {k: v for k, v in cfg["options"].items() if k not in infra_options(cfg)}
    return out


def describe() -> list[dict[str, Any]]:
    """One row per key (name, group, type, default, unit, in run_key, doc): docs/config.md's table."""
    return [{"key": k.name, "group": k.group, "type": k.type,
             "default": "the dataset's recipe" if k.default is None and k.group == "recipe" else repr(k.default),
             "unit": k.unit, "run_key": "yes" if k.identity else "no", "doc": k.doc} for k in KEYS.values()]
