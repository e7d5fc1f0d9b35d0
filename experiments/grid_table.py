"""The table a script's grid prints when it ends: analysis/make_tables.py's code (analysis.render) over the stores
the grid wrote, for the runs of its plan.

The driver (experiments.common) imports this module and this module imports the analysis, one direction only: the
analysis reads plans through experiments.registry and never imports the driver.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from analysis.render import print_script_table
from pcl import results
from pcl.secrets import resolve_mongo_url


def print_table(name: str, cfg: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> None:
    """The script's table for the runs of its plan, from the stores the grid wrote (analysis/make_tables.py's code)."""
    url = resolve_mongo_url(cfg["mongo_url"])
    stores: list[Any] = [cfg["results_dir"]]
    if url:
        stores.append(results.connect(url, cfg["db_name"]))
    print_script_table(name, cfg, stores, runs=runs)
