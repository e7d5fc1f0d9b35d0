"""The paper's reference numbers (Wu & Gong, AAAI 2021), each with its confidence and source: the one place they live.

Every number the analysis compares against is defined in this file and nowhere else; a cell that is not here is
"unknown" in every table, never invented. Numbers are kept as the source prints them (CIFAR: top-1 ACCURACY %
mean +- std) and converted to top-1 ERROR % (100 - accuracy, same std) by `paper_cell`, because the paper's tables,
like this project's, print error.

Confidence:
  A  the paper's CIFAR table as quoted (accuracy mean +- std) in the README of a public PCL re-implementation;
     not checked against the PDF, but the pattern fits.
  Q  quoted as PCL's own numbers by the IJCV survey "Knowledge Distillation: A Survey" (Gou et al. 2021),
     Tables 5-6, which also quotes the PCL cells of A to the digit; no std given.
  C  a machine-written summary of the paper; rough.

Keys: table = a script name of experiments.registry.SCRIPTS, dataset/backbone/method as in run configs; the
ablation tables' columns are their grid variants (the label before "/backbone").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

CONFIDENCE = {
    "A": "the paper's CIFAR table as quoted by a public PCL re-implementation (not checked against the PDF)",
    "Q": "quoted as PCL's own number by Gou et al. 2021, Knowledge Distillation: A Survey (IJCV), Tables 5-6",
    "C": "a machine-written summary of the paper (rough)",
}
SOURCES = {
    "A": "public PCL re-implementation, README: CIFAR table (accuracy mean +- std)",
    "Q": "Gou et al. 2021, Knowledge Distillation: A Survey, IJCV, Tables 5-6",
    "C": "machine-written summary of the paper",
}

_METHODS = ("dml", "cl_ilr", "one", "ffl", "okddip", "kdcl", "pcl")
# CIFAR top-1 ACCURACY (%) "mean+-std" per backbone, columns in _METHODS order (confidence A).
_CIFAR_ACCURACY = {
    "cifar100": {
        "resnet32": "73.68+-0.14 72.33+-0.46 73.79+-0.41 72.18+-0.11 73.25+-0.38 73.76+-0.34 74.14+-0.16",
        "resnet110": "77.86+-0.50 78.83+-0.58 78.40+-0.36 77.22+-0.41 78.54+-0.26 78.28+-0.32 79.98+-0.55",
        "vgg16": "75.52+-0.10 74.33+-0.08 74.37+-0.39 70.87+-0.99 74.68+-0.05 75.67+-0.22 76.89+-0.25",
        "densenet40_12": "73.06+-0.31 71.45+-0.34 71.60+-0.38 71.25+-0.35 71.23+-0.14 72.52+-0.42 73.09+-0.16",
        "wrn20_8": "79.77+-0.07 79.40+-0.12 79.10+-0.39 78.22+-0.14 78.83+-0.06 79.37+-0.30 80.51+-0.49",
    },
    "cifar10": {
        "resnet32": "93.94+-0.07 94.02+-0.28 94.20+-0.12 94.01+-0.11 94.17+-0.15 94.01+-0.08 94.33+-0.12",
        "resnet110": "94.53+-0.25 95.19+-0.11 95.16+-0.30 94.72+-0.06 95.14+-0.10 95.11+-0.16 95.53+-0.16",
        "vgg16": "94.13+-0.07 94.14+-0.15 94.14+-0.23 93.22+-0.08 93.98+-0.06 94.09+-0.12 94.74+-0.02",
        "densenet40_12": "93.59+-0.26 93.05+-0.25 93.08+-0.21 93.28+-0.16 92.64+-0.22 93.87+-0.08 94.13+-0.13",
        "wrn20_8": "95.20+-0.13 94.59+-0.08 94.70+-0.14 94.72+-0.13 94.83+-0.15 95.27+-0.16 95.42+-0.04",
    },
}
# The Baseline column, top-1 ACCURACY (%), no std (confidence Q); the other baseline cells are unknown.
_BASELINE_ACCURACY = {
    ("cifar10", "resnet110"): 94.91, ("cifar10", "vgg16"): 93.96, ("cifar10", "densenet40_12"): 93.19,
    ("cifar100", "resnet110"): 76.21, ("cifar100", "densenet40_12"): 71.03,
}


@dataclass(frozen=True)
class PaperCell:
    """One number of the paper: top-1 error (%) with its std (None: not given), confidence A/Q/C and source."""

    table: str
    dataset: str
    backbone: str
    column: str
    top1_err: float
    std: float | None
    confidence: str
    source: str
    note: str = ""


@dataclass(frozen=True)
class PaperDelta:
    """A difference the paper states without the cells: error(column) - error(reference), in points (C only).

    dataset/backbone None: the paper does not say which (the ablations); such a delta is compared on every table
    of that script whatever its dataset and backbone, and the table says so.
    """

    table: str
    column: str
    reference: str
    delta_err: float
    confidence: str
    source: str
    dataset: str | None = None
    backbone: str | None = None
    note: str = ""


def _cifar_cells() -> Iterator[PaperCell]:
    for dataset, rows in _CIFAR_ACCURACY.items():
        for backbone, text in rows.items():
            for method, entry in zip(_METHODS, text.split(), strict=True):
                acc, std = (float(x) for x in entry.split("+-"))
                yield PaperCell("table2", dataset, backbone, method, round(100.0 - acc, 2), std, "A", SOURCES["A"])
    for (dataset, backbone), acc in _BASELINE_ACCURACY.items():
        yield PaperCell("table2", dataset, backbone, "baseline", round(100.0 - acc, 2), None, "Q", SOURCES["Q"])


#: every known cell (table2: accuracy converted to error; imagenet: the summary's error)
CELLS: tuple[PaperCell, ...] = (
    *_cifar_cells(),
    PaperCell("imagenet", "imagenet", "resnet18", "pcl", 29.58, None, "C", SOURCES["C"]),
)

#: differences the paper states (points of top-1 error; negative = the column is better)
DELTAS: tuple[PaperDelta, ...] = (
    PaperDelta("imagenet", "pcl", "baseline", -0.9, "C", SOURCES["C"], "imagenet", "resnet18",
               "PCL about 0.9 points better than the plain network"),
    PaperDelta("ablations.components", "+ peer ensemble teacher", "+ multi-input", -2.6, "C", SOURCES["C"],
               note="adding the peer ensemble teacher: about +2.6 points accuracy"),
    PaperDelta("ablations.components", "+ peer mean teacher (PCL)", "+ peer ensemble teacher", -1.1, "C",
               SOURCES["C"], note="adding the peer mean teacher on top: about +1.1 points accuracy"),
    PaperDelta("ablations.components", "PCL w/o multi-input", "+ peer mean teacher (PCL)", 0.7, "C", SOURCES["C"],
               note="removing multi-input augmentation: about -0.7 points accuracy"),
)

#: what the paper says without a number, per table (shown under the table)
NOTES: dict[str, tuple[str, ...]] = {
    "ablations.mean_teacher": (
        "Paper (C): replacing the peer mean teacher by mutual learning between live peers is worse.",
        "Paper (C): replacing the temporal mean by a plain weighted average is worse.",
    ),
    "ablations.peers": ("Paper (C): more peers are better, with 4 peers still competitive.",),
    "ablations.deployed_head": (
        "Paper (C): PCL-E gains notably at about 0.01-0.08M extra parameters, the size of the peer ensemble "
        "teacher's classifier Linear(m*d, C); so the paper's PCL-E is most probably the `ensemble` head, while "
        "its Algorithm 1 names the ensemble of the temporal-mean peers (`pcl_e`, no classifier). Both are shown.",
    ),
    "table2": ("Paper (C): PCL is about 2 points better than the baseline on CIFAR-100 and about 1 on CIFAR-10.",),
    "imagenet": ("Every ImageNet cell but PCL's is unknown.",),
}

#: which head the PCL-E table calls PCL-E (see NOTES["ablations.deployed_head"])
PCL_E_HEAD = "ensemble"


def paper_cell(table: str, dataset: str, backbone: str, column: str) -> PaperCell | None:
    """The paper's cell (top-1 error %) or None when unknown. Tables that re-use another table's runs
    (ablations' default PCL cell, two_stage's baseline and PCL) are looked up only under their own name."""
    return _CELL_INDEX.get((table, dataset, backbone, column))


def paper_deltas(table: str, dataset: str | None = None, backbone: str | None = None) -> list[PaperDelta]:
    """The deltas stated for `table` that apply to dataset/backbone (deltas that name neither apply to all)."""
    return [d for d in DELTAS if d.table == table and d.dataset in (None, dataset) and d.backbone in (None, backbone)]


_CELL_INDEX = {(c.table, c.dataset, c.backbone, c.column): c for c in CELLS}

__all__ = ["CELLS", "CONFIDENCE", "DELTAS", "NOTES", "PCL_E_HEAD", "PaperCell", "PaperDelta", "SOURCES",
           "paper_cell", "paper_deltas"]
