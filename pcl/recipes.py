"""The datasets and their recipes: split sizes and classes, the per-dataset optimisation recipe (CIFAR: the
ONE/OKDDip codebases'; ImageNet: ours), and how the paper's time constants keep their share of a shorter run
(a method option declares itself a time constant: pcl.declarations.Option.time_constant). Records layer: no torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from pcl import registry
from pcl.declarations import DATASETS

#: images in the train / test split of the datasets whose size is fixed (the original files)
SPLIT_SIZES: dict[str, tuple[int, int]] = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000)}
#: the datasets whose splits pcl.data serves from the device (DeviceLoader, crop and flip drawn there): where
#: fast_path=auto captures the training step (pcl.schema.resolve_fast_path); ImageNet decodes JPEGs on the CPU
DEVICE_RESIDENT: frozenset[str] = frozenset({"cifar10", "cifar100", "synthetic"})
#: the classes of each of the DATASETS (synthetic: its default; `synthetic_classes` sets it)
NUM_CLASSES: dict[str, int] = {"cifar10": 10, "cifar100": 100, "imagenet": 1000, "synthetic": 10}


@dataclass(frozen=True)
class DatasetRecipe:
    """A dataset's recipe (CIFAR: the ONE/OKDDip codebases' recipe; ImageNet: ours): the values of the recipe keys whose
    default is None, and the LR steps as epochs of the `epochs`-long schedule (scaled to shorter runs)."""

    epochs: int
    batch_size: int
    weight_decay: float
    milestones: tuple[int, ...]


CIFAR_RECIPE = DatasetRecipe(epochs=300, batch_size=128, weight_decay=5e-4, milestones=(150, 225))
IMAGENET_RECIPE = DatasetRecipe(epochs=90, batch_size=256, weight_decay=1e-4, milestones=(30, 60))
RECIPES: dict[str, DatasetRecipe] = {"cifar10": CIFAR_RECIPE, "cifar100": CIFAR_RECIPE, "synthetic": CIFAR_RECIPE,
                                     "imagenet": IMAGENET_RECIPE}


def recipe_of(dataset: str) -> DatasetRecipe:
    return RECIPES.get(dataset, CIFAR_RECIPE)


def scaled_milestones(epochs: int, recipe: DatasetRecipe = CIFAR_RECIPE) -> list[int]:
    """The recipe's LR steps scaled to `epochs` (e.g. 150/225 of 300 -> 2/3 of 4) [ours]."""
    return [max(1, round(m * epochs / recipe.epochs)) for m in recipe.milestones]


#: training-split sizes (images) of the datasets whose size does not come from the config
TRAIN_SIZES = {"cifar10": 50_000, "cifar100": 50_000, "imagenet": 1_281_167}
#: the paper's schedule, in which its time constants are stated: 300 CIFAR epochs of 50,000 // 128 steps (CIFAR_RECIPE)
REFERENCE_EPOCHS = CIFAR_RECIPE.epochs
REFERENCE_STEPS = CIFAR_RECIPE.epochs * (TRAIN_SIZES["cifar100"] // CIFAR_RECIPE.batch_size)


def steps_per_epoch(cfg: Mapping[str, Any]) -> int:
    """Optimiser steps per epoch of a run config (the train loader drops the last partial batch)."""
    size = cfg["synthetic_train_size"] if cfg["dataset"] == "synthetic" else TRAIN_SIZES[cfg["dataset"]]
    if cfg.get("train_subset") is not None:
        size = min(size, cfg["train_subset"])
    return max(1, size // cfg["batch_size"])


def scale_rampup(length: int, epochs: int) -> int:
    """A ramp-up of `length` of the paper's 300 epochs, as the same share of an `epochs`-long run (>= 1 epoch; 0 =
    no ramp-up stays 0): 80 of 300 -> 80 of 300, 24 of 90 (ImageNet), 3 of 10 (`quick`) [ours]."""
    return length if length == 0 or epochs == REFERENCE_EPOCHS else max(1, round(length * epochs / REFERENCE_EPOCHS))


def scale_ema_decay(decay: float, steps: int) -> float:
    """A temporal-mean decay whose averaging window 1/(1 - decay) (0.999: 1,000 steps, 0.85 % of the paper's 117,000
    steps) is the same share of a `steps`-long run; 1.0 (plain average) stays 1.0 [ours]."""
    if decay >= 1.0 or steps == REFERENCE_STEPS:
        return decay
    window = max(1.0, steps / REFERENCE_STEPS / (1.0 - decay))
    return 1.0 - 1.0 / window


#: how a method option declared a time constant of the recipe (Option.time_constant) is scaled to the run, unless
#: given explicitly: "epochs" a length in epochs, "ema_decay" a per-step decay (its window in steps)
TIME_SCALES: dict[str, Callable[[Any, Mapping[str, Any]], Any]] = {
    "epochs": lambda value, cfg: scale_rampup(value, cfg["epochs"]),
    "ema_decay": lambda value, cfg: scale_ema_decay(value, cfg["epochs"] * steps_per_epoch(cfg)),
}


def time_constant_names() -> str:
    """The declared time constants, as `option` (methods), for the docs."""
    found: dict[str, list[str]] = {}
    for name, spec in registry.methods().items():
        for option in spec.time_constants:
            found.setdefault(option, []).append(name)
    return ", ".join(f"`{option}` ({', '.join(names)})" for option, names in found.items())


def dataset_defaults(dataset: str, epochs: int | None = None) -> dict[str, Any]:
    """The recipe keys' defaults for `dataset` (milestones scaled to `epochs`, default the recipe's)."""
    recipe = recipe_of(dataset)
    epochs = recipe.epochs if epochs is None else epochs
    return {"epochs": recipe.epochs, "batch_size": recipe.batch_size, "weight_decay": recipe.weight_decay,
            "milestones": scaled_milestones(epochs, recipe)}


def run_classes(cfg: Mapping[str, Any]) -> int:
    """The classes a run's network predicts: its dataset's, or `synthetic_classes` on synthetic data."""
    return cfg["synthetic_classes"] if cfg["dataset"] == "synthetic" else NUM_CLASSES[cfg["dataset"]]


def train_split_size(cfg: Mapping[str, Any]) -> int | None:
    """Images in the training split of a run's dataset (before `train_subset`); None where only the data on disk
    knows (ImageNet: checked when the folder is scanned)."""
    if cfg["dataset"] == "synthetic":
        return cfg["synthetic_train_size"]
    return SPLIT_SIZES[cfg["dataset"]][0] if cfg["dataset"] in SPLIT_SIZES else None
