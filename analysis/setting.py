"""What a table's runs are, read from its plan: the dataset as used, which data files (official, other files such as
the lossy stand-in, synthetic), the schedule, the training subset and the seeds; and whether that is the paper's
setting. Tables carry it in their titles and file names, and compare with the paper's numbers only in the paper's
setting (elsewhere a cell says why it is not comparable). Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from pcl import recipes

#: the datasets the paper reports
PAPER_DATASETS = ("cifar10", "cifar100", "imagenet")
DATASET_NAMES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet", "synthetic": "synthetic"}


def _span(values: Sequence[int]) -> str:
    values = sorted(values)
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ", ".join(map(str, values))


@dataclass(frozen=True)
class Setting:
    dataset: str
    identities: tuple[str | None, ...]
    epochs: tuple[int, ...]
    subsets: tuple[int | None, ...]
    seeds: tuple[int, ...]

    @classmethod
    def of(cls, plan: Sequence[Mapping[str, Any]]) -> Setting:
        """The setting of a plan's run configs (one dataset per table)."""
        def values(key: str) -> tuple:
            return tuple(sorted({r.get(key) for r in plan}, key=lambda v: (v is None, str(v))))

        datasets = {r.get("dataset") for r in plan}
        return cls(dataset=str(next(iter(datasets))) if len(datasets) == 1 else ", ".join(sorted(map(str, datasets))),
                   identities=values("data_identity"), epochs=values("epochs"), subsets=values("train_subset"),
                   seeds=tuple(sorted({int(r["seed"]) for r in plan if isinstance(r.get("seed"), int)})))

    @property
    def data(self) -> str:
        """Which data, in words."""
        if self.dataset == "synthetic":
            return "synthetic data"
        others = [i for i in self.identities if i is not None and not str(i).startswith("files:")]
        if others:
            return f"other files than the official ones ({', '.join(others)}; e.g. a stand-in)"
        return "the official files" if self.dataset != "imagenet" else "an ImageNet folder"

    @property
    def gaps(self) -> list[str]:
        """Why this is not the paper's setting (empty: it is)."""
        out = []
        if self.dataset not in PAPER_DATASETS:
            out.append(f"{self.dataset} is not a dataset of the paper")
        elif "other files" in self.data:
            out.append("the data are not the official files")
        paper_epochs = recipes.recipe_of(self.dataset).epochs
        if self.epochs and set(self.epochs) != {paper_epochs}:
            plural = "s" if self.epochs != (1,) else ""
            out.append(f"{_span(self.epochs)} epoch{plural}, not the paper's {paper_epochs}")
        if any(s is not None for s in self.subsets):
            out.append("a subset of the training images")
        return out

    @property
    def papers(self) -> bool:
        return not self.gaps

    def describe(self) -> str:
        """One line: e.g. "CIFAR-10, other files than the official ones (md5:...), 2 epochs, 1,000 training images,
        seeds 0-2"."""
        parts = [DATASET_NAMES.get(self.dataset, self.dataset)] + ([self.data] if self.dataset != "synthetic" else [])
        parts.append(f"{_span(self.epochs)} epoch{'s' if self.epochs != (1,) else ''}")
        subsets = [s for s in self.subsets if s is not None]
        parts.append(f"{', '.join(f'{s:,}' for s in subsets)} training images" if subsets
                     else "all training images")
        parts.append(f"seed{'s' if len(self.seeds) != 1 else ''} {_span(self.seeds)}")
        return ", ".join(parts) + ("" if self.papers else " (not the paper's setting)")

    @property
    def slug(self) -> str:
        """The setting in a file name: data, epochs, subset, seeds (so tables of two settings never overwrite)."""
        others = [str(i).split(":", 1)[-1][:8] for i in self.identities if i and not str(i).startswith("files:")]
        data = [] if self.dataset == "synthetic" else ["files-" + "-".join(others) if others else "official"]
        subsets = [str(s) for s in self.subsets if s is not None]
        return "_".join([*data, "-".join(map(str, self.epochs)) + "ep", *(["-".join(subsets) + "img"] if subsets
                                                                       else []), f"{len(self.seeds)}seeds"])
