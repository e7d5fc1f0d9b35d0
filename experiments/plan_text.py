"""The text of a driver's `plan` command (experiments.common.make_experiment): the table of the planned runs, every
method's resolved options (also printed by `print_config`) and the summary line.

Owns only how a plan is shown; the plan itself (the grid expanded into validated run configs) is
experiments.common.expand.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from pcl import registry, schema, tracking


def _format_options(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(options.items())) or "(none)"


def _format_plan(runs: Sequence[Mapping[str, Any]]) -> str:
    """The plan as a table (run_key, every identity key of pcl.schema whose value differs between the runs, the
    label, and the options each run sets apart from its method's defaults), then every method's resolved options."""
    import pandas as pd

    shown = [k for k in schema.RUN_KEYS if schema.KEYS[k].identity and k != "options"]
    rows = []
    for r in runs:
        defaults = {**registry.method(r["method"]).defaults, **({"peers": r["peers"]} if r["peers"] else {})}
        changed = {k: v for k, v in r["options"].items() if defaults.get(k, object()) != v}
        rows.append({"run_key": r["run_key"], **{k: "" if r[k] is None else str(r[k]) for k in shown},
                     "label": r["label"] or r["method"], "options apart from the defaults": f"[{_format_options(changed)}]" if changed else ""})
    table = pd.DataFrame(rows)
    table = table[[c for c in table.columns if c in ("run_key", "seed", "label") or table[c].nunique() > 1]]
    table.index = range(1, len(table) + 1)
    return "\n".join([table.to_string(), "", _format_method_options(runs)])


def _plan_summary(runs: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> str:
    """`plan`'s last line: how many runs, per dataset, method and backbone, how many seeds, and how many are already
    COMPLETED in the file store (the grid skips those; MongoDB is not read: with it, more may be done)."""
    from collections import Counter

    def counts(key: str) -> str:
        return ", ".join(f"{k} {n}" for k, n in Counter(str(r[key]) for r in runs).items())

    seeds = sorted({r["seed"] for r in runs})
    line = (f"plan: {len(runs)} run(s); per dataset: {counts('dataset')}; per method: {counts('method')}; per "
            f"backbone: {counts('backbone')}; {len(seeds)} seed(s)")
    store = Path(str(config.get("results_dir") or "results"))
    mongo = " (MongoDB not read: more may be done there)" if (
        config.get("mongo_url") or os.environ.get(tracking.MONGO_URL_ENV)) else ""
    if not store.is_dir():
        return f"{line}; none COMPLETED yet (no file store at {store}){mongo}"
    from pcl import results

    try:
        done = {(r.get("config") or {}).get("run_key")
                for r in results.iter_records(str(store), {"status": "COMPLETED"})}
    except Exception as err:  # noqa: BLE001 - a summary line never stops `plan`
        return f"{line}; COMPLETED runs not counted ({store} could not be read: {' '.join(str(err).split())[:200]})"
    completed = sum(r["run_key"] in done for r in runs)
    return (f"{line}; {completed} already COMPLETED in {store} (the grid skips them; force=True trains them again)"
            f"{mongo}")


def _format_method_options(runs: Sequence[Mapping[str, Any]]) -> str:
    """Each method's resolved options (its defaults merged with `options`; docs/methods.md says what they mean)."""
    lines = ["resolved options per method (docs/methods.md: default and meaning of each):"]
    seen: dict[str, list[str]] = {}
    for r in runs:
        shown = _format_options(r["options"])
        if shown not in seen.setdefault(r["method"], []):
            seen[r["method"]].append(shown)
    for method, variants in seen.items():
        for shown in variants:
            lines.append(f"  {method}: {shown}")
    return "\n".join(lines)
