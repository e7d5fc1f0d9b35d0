"""Rendering of the paper's tables (analysis.tables builds them): a Table as text in the paper's form
(`display_frame`: rows ours / paper / ours - paper / params per backbone, the best of each row marked), as Markdown
via tabulate (`render_markdown`), LaTeX booktabs via pandas Styler (`render_latex`) and CSV (`cells_csv`), the files
NAME_DATASET[_SETTING].{md,tex,csv} (`write_table`), and the Markdown table a script's grid prints when it ends
(`print_script_table`). Record text is escaped for each format (analysis.escape).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from analysis import escape, paper
from analysis.runs import STATUSES, AnalysisError, describe_stores, read_attempts
from analysis.tables import BACKBONE_NAMES, SPECS, Table, build_table
from pcl.fsio import replace_file

MARK_FEW = "†"  # a cell with fewer completed runs than planned
ROW_OURS, ROW_PAPER, ROW_DIFF, ROW_PARAMS = "ours", "paper", "ours - paper", "params train / deployed"


def _fmt_params(train: Any, deployed: Any) -> str:
    def one(n: Any) -> str:
        return "?" if n is None or (isinstance(n, float) and math.isnan(n)) else f"{n / 1e6:.3f}M"

    return f"{one(train)} / {one(deployed)}"


def _ours_text(c: Mapping[str, Any]) -> str:
    nan_results = int(c.get("nan_results") or 0)
    if c["n"] == 0 and c["completed"] and nan_results:
        return f"NaN ({nan_results} of {c['completed']} completed runs recorded NaN: diverged)"
    if c["n"] == 0 and c["completed"]:  # --head names a head these runs do not have
        return f"no such head ({c['completed']} completed runs)"
    if c["n"] == 0:
        text = "-"
    elif c["n"] == 1 or math.isnan(c["std"]):
        text = f"{c['mean']:.2f}"
    else:
        text = f"{c['mean']:.2f} ± {c['std']:.2f}"
    others = [f"{c[s]} {s}" for s in STATUSES[1:] if c[s]] + ([f"{nan_results} NaN"] if nan_results else [])
    newer = c.get("newer_attempts")
    if isinstance(newer, str) and newer:  # an older COMPLETED attempt is used while a later one did not complete
        others.append(f"older attempt used: a later one is {newer}")
    count = f"n={c['n']}" if c["n"] == c["n_planned"] else f"n={c['n']}/{c['n_planned']}"
    text += f" ({count}{': ' + ', '.join(others) if others else ''})"
    return text + (MARK_FEW if c["n"] < c["n_planned"] else "")


def _paper_text(c: Mapping[str, Any]) -> str:
    if math.isnan(c["paper_err"]):
        return "unknown"
    if c.get("not_comparable"):
        return f"{c['paper_err']:.2f} ({c['paper_conf']}): not comparable ({c['not_comparable']})"
    std = "" if math.isnan(c["paper_std"]) else f" ± {c['paper_std']:.2f}"
    return f"{c['paper_err']:.2f}{std} ({c['paper_conf']})"


def _diff_text(c: Mapping[str, Any]) -> str:
    if math.isnan(c["paper_err"]):
        return "unknown"
    if c.get("not_comparable"):
        return "not comparable"
    return "-" if math.isnan(c["diff"]) else f"{c['diff']:+.2f}"


def display_frame(table: Table) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(text, best): the table in the paper's form as strings, rows (backbone, ours|paper|diff|params) x columns,
    and a same-shaped boolean frame marking the best (lowest) mean of each backbone."""
    spec, cells = table.spec, table.cells
    columns = [spec.display(c) for c in dict.fromkeys(cells["column"])]
    kinds = [ROW_OURS] + ([ROW_PAPER, ROW_DIFF] if table.head is None else []) + [ROW_PARAMS]
    index = pd.MultiIndex.from_tuples([(BACKBONE_NAMES.get(r, r), k) for r in dict.fromkeys(cells["row"])
                                       for k in kinds], names=["backbone", ""])
    text = {key: dict.fromkeys(columns, "") for key in index}  # filled as dicts: one frame at the end
    best = {key: dict.fromkeys(columns, False) for key in index}
    for c in cells.to_dict("records"):
        row, col = BACKBONE_NAMES.get(c["row"], c["row"]), spec.display(c["column"])
        text[(row, ROW_OURS)][col] = _ours_text(c)
        best[(row, ROW_OURS)][col] = bool(c["best"])
        if table.head is None:
            text[(row, ROW_PAPER)][col] = _paper_text(c)
            text[(row, ROW_DIFF)][col] = _diff_text(c)
        text[(row, ROW_PARAMS)][col] = _fmt_params(c["params_train"], c["params_deployed"])
    return (pd.DataFrame([list(text[k].values()) for k in index], index=index, columns=columns),
            pd.DataFrame([list(best[k].values()) for k in index], index=index, columns=columns))


def _footnotes(table: Table) -> list[str]:
    counts = table.status_counts
    lines = [f"Runs of the plan: {sum(counts.values())} ({', '.join(f'{v} {k}' for k, v in counts.items() if v)}); "
             f"store: {table.stores}.",
             "Cells: mean ± std (ddof=1) over seeds; n = completed runs"
             + (f"; {MARK_FEW} = fewer completed runs than planned." if (table.cells["n"] < table.cells[
                 "n_planned"]).any() else ".") + " Bold: lowest error of the row.",
             "Paper: top-1 error = 100 - the quoted accuracy; confidence "
             + "; ".join(f"{k} = {v}" for k, v in paper.CONFIDENCE.items()) + " (analysis/paper.py).",
             "Params: trained parameters / parameters of the deployed model"
             + (" (PCL-E table: parameters each head needs at inference)." if table.spec.heads else ".")]
    if table.select == "best":
        lines.append("Selection: each run's best epoch ON THE TEST SET; these numbers are optimistic.")
    lines += table.notes
    return lines


def render_markdown(table: Table) -> str:
    """The table as Markdown (tabulate through pandas), with its title, footnotes and the paper's deltas."""
    text, best = display_frame(table)
    text = escaped_frame(text, escape.markdown)  # record text (labels, names) is shown, never interpreted
    shown = text.mask(best.to_numpy(), "**" + text + "**").reset_index()
    shown["backbone"] = shown["backbone"].where(~shown["backbone"].duplicated(), "")
    parts = [f"### {escape.markdown(table.title)}", "", shown.to_markdown(index=False, disable_numparse=True), ""]
    if not table.comparisons.empty:
        parts += ["Differences the paper states (top-1 error points; negative = better):", "",
                  escaped_frame(table.comparisons, escape.markdown).to_markdown(index=False, disable_numparse=True),
                  ""]
    parts += [f"- {escape.markdown(line, limit=2000)}" for line in _footnotes(table)]
    return "\n".join(parts) + "\n"


def escaped_frame(frame: pd.DataFrame, escape_text: Callable[[Any], Any]) -> pd.DataFrame:
    """`frame` with every cell, column name and index label passed through `escape_text` (analysis.escape): what
    a renderer does before a frame that holds record text reaches its format."""
    out = frame.map(escape_text)
    out.columns = [escape_text(c) for c in frame.columns]
    if isinstance(frame.index, pd.MultiIndex):
        out.index = pd.MultiIndex.from_tuples([tuple(escape_text(x) for x in t) for t in frame.index],
                                              names=frame.index.names)
    else:
        out.index = pd.Index([escape_text(x) for x in frame.index], name=frame.index.name)
    return out


def render_latex(table: Table) -> str:
    """The table as a LaTeX booktabs tabular (pandas Styler), best of each row in bold, with a caption."""
    text, best = display_frame(table)
    text = escaped_frame(text, escape.one_line)  # one line each; the Styler escapes LaTeX's specials below
    best = best.set_axis(text.index, axis=0).set_axis(text.columns, axis=1)
    styler = text.style.apply(lambda _: best.map(lambda b: "font-weight: bold;" if b else ""), axis=None)
    styler = (styler.format(escape="latex").format_index(escape="latex", axis=0)
              .format_index(escape="latex", axis=1))
    caption = escape.latex(table.title)
    return styler.to_latex(hrules=True, convert_css=True, multirow_align="t", caption=caption,
                           position_float="centering", environment="table")


def cells_csv(table: Table) -> str:
    """The numeric cells (one row per backbone x column) as CSV: every count, the paper's numbers, the diff; text
    cells a spreadsheet would take for a formula are escaped (analysis.escape.csv_cell)."""
    return table.cells.map(escape.csv_cell).to_csv(index=False)


def write_table(table: Table, out_dir: str | Path, markdown: str | None = None) -> dict[str, Path]:
    """Write STEM.{md,tex,csv} under out_dir (Table.stem: script, dataset, setting); returns the paths by format."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = table.stem
    paths = {"md": out / f"{stem}.md", "tex": out / f"{stem}.tex", "csv": out / f"{stem}.csv"}
    # each a new file (a link in the folder in place of one is replaced, never written through)
    replace_file(paths["md"], render_markdown(table) if markdown is None else markdown)  # printed already: reused
    replace_file(paths["tex"], render_latex(table))
    replace_file(paths["csv"], cells_csv(table))
    return paths


def _script_name(name: str) -> str:
    """A registry name, or the experiment name a script's driver records (e.g. ablation_components)."""
    if name in SPECS:
        return name
    from experiments import registry

    for key in registry.SCRIPTS:
        if registry.experiment(key).path == name:
            return key
    raise AnalysisError(f"unknown table {name!r}; known: {', '.join(SPECS)}")


def print_script_table(name: str, config: Mapping[str, Any], stores: Any, *, runs: Sequence[Mapping] | None = None,
                       echo: Callable[[str], None] = print) -> str:
    """Print (and return) the Markdown table of script `name` for the runs of its plan under `config`: what every
    table/ablation script calls when its grid ends.

    name: registry name ("table2", "ablations.peers") or the driver's experiment name ("ablation_peers").
    config: the script's resolved config (the driver's _config); runs: its expanded plan if already at hand.
    stores: a folder, a MongoDB URL, a list of these, or a pcl.tracking.Store (its .sources()).
    Never raises for bad input: the one-line reason is printed and returned instead.
    """
    try:
        key = _script_name(name)
        if runs is None:
            from experiments import registry

            runs = registry.plan_for_config(key, config)
        sources = stores.sources() if hasattr(stores, "sources") else (
            list(stores) if isinstance(stores, (list, tuple)) else [stores])
        attempts = read_attempts(sources)
        described = describe_stores(sources)
        text = "\n\n".join(render_markdown(build_table(key, [r for r in runs if r["dataset"] == d], attempts,
                                                       stores=described))
                           for d in dict.fromkeys(r["dataset"] for r in runs))
    except AnalysisError as err:
        text = f"no table: {err}"
    echo(text)
    return text


__all__ = ["cells_csv", "display_frame", "print_script_table", "render_latex", "render_markdown", "write_table"]
