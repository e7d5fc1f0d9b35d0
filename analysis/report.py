"""`python analysis/report.py`: one page (Markdown, optional HTML beside it) with the tables and figures of one
study, the store, the commit, the date, the runs per status and the comparison with the paper (analysis/paper.py).

    python analysis/report.py --out report/report.md --html          # every table with runs in results/
    python analysis/report.py --tables table2 ablations.peers --store mongodb://host/pcl --out r/report.md

Figures go to a `figures` folder beside the report. Exit codes: 0 written; 2 bad input (as make_tables.py).
"""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote

import pandas as pd

from analysis import claims, cli, escape
from analysis.render import escaped_frame, render_markdown
from analysis.runs import STATUSES, describe_stores
from analysis.tables import BACKBONE_NAMES, Table, build_tables
from pcl.fsio import replace_file

ROOT = Path(__file__).resolve().parents[1]


def git_commit(root: Path = ROOT) -> str:
    """The checkout's commit (short hash, "+ local changes" when the tree is dirty), or "unknown"."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + (" + local changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def runs_per_status(tables: Sequence[Table]) -> pd.DataFrame:
    """Planned runs per status per table, each run_key counted once per table, with a total row."""
    rows = []
    for t in tables:
        counts = t.status_counts
        rows.append({"table": t.name, "setting": t.setting_text, **counts, "planned": sum(counts.values())})
    frame = pd.DataFrame(rows, columns=["table", "setting", *STATUSES, "planned"])
    keys = pd.concat([t.runs[["run_key", "status"]] for t in tables]).drop_duplicates("run_key")
    total = {"table": "all (distinct runs)", "setting": "", **{s: int((keys["status"] == s).sum())
                                                               for s in STATUSES}, "planned": len(keys)}
    return pd.concat([frame, pd.DataFrame([total])], ignore_index=True)


def paper_comparison(tables: Sequence[Table]) -> pd.DataFrame:
    """Every cell with a known paper number: ours (mean, n), paper (with confidence) and the difference."""
    rows = []
    for t in tables:
        for c in t.cells[t.cells["paper_err"].notna()].to_dict("records"):
            rows.append({"table": t.name, "setting": t.setting_text, "backbone": BACKBONE_NAMES.get(c["row"], c["row"]),
                         "column": t.spec.display(c["column"]),
                         "ours": "-" if c["n"] == 0 else f"{c['mean']:.2f} (n={c['n']})",
                         "paper": f"{c['paper_err']:.2f} ({c['paper_conf']})",
                         "ours - paper": "-" if pd.isna(c["diff"]) else f"{c['diff']:+.2f}"})
    return pd.DataFrame(rows)


def build_report(tables: Sequence[Table], stores: Sequence[Any], out: str | Path, *, skipped: Sequence[str] = (),
                 html: bool = False, formats: Sequence[str] = ("png",), workers: int | None = 1,
                 reuse: bool = True) -> dict[str, Any]:
    """Write the report (Markdown; HTML beside it when html) and its figures (out's folder/figures; with reuse, a
    table whose inputs did not change keeps its figure files: analysis.figcache).

    Returns {"md": path, "html": path or None, "figures": [paths of PNGs], "notes": [lines]}.
    """
    from analysis.plots import make_figures

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure_dir = out.parent / "figures"
    done, notes = make_figures(tables, figure_dir, formats=["png", *[f for f in formats if f != "png"]],
                               workers=workers, reuse=reuse)  # the page shows the PNGs
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = ["# PCL reproduction report", "",
             f"- Date: {when}", f"- Commit: {escape.markdown(git_commit())}",
             f"- Store: {escape.markdown(describe_stores(stores), limit=2000)}",
             f"- Tables: {escape.markdown('; '.join(f'{t.name} ({t.setting_text})' for t in tables), limit=2000)}",
             "- Numbers: top-1 error (%) on the test set, mean ± std (ddof=1) over seeds; the paper's numbers "
             "and their confidence: analysis/paper.py.", "",
             "## Runs per status", "",
             escaped_frame(runs_per_status(tables), escape.markdown).to_markdown(index=False), ""]
    comparison = paper_comparison(tables)
    parts += ["## Comparison with the paper", ""]
    parts += [escaped_frame(comparison, escape.markdown).to_markdown(index=False, disable_numparse=True)
              if not comparison.empty
              else "No cell of these tables has a known paper number (see analysis/paper.py).", ""]
    parts += [claims.claims_section(tables), ""]  # a verdict per claim of the paper (analysis/claims.py)
    for t in tables:
        parts += ["## " + escape.markdown(f"{t.name} ({t.setting_text})"), "", render_markdown(t)]
        for figure, paths in [(f, p) for f, p in done if f.stem.startswith(f"{t.stem}_")]:
            rel = quote(paths[0].relative_to(out.parent).as_posix())
            parts += [f"![{escape.markdown(figure.kind)}]({rel})", "",
                      f"*{escape.markdown(figure.caption, limit=2000)}*", ""]
    if notes or skipped:
        parts += ["## Not shown", ""] + [f"- {escape.markdown(line, limit=2000)}" for line in [*notes, *skipped]]
        parts += [""]
    text = "\n".join(parts)
    replace_file(out, text)  # never through a link in its place
    html_path = None
    if html:
        html_path = out.with_suffix(".html")
        body = escape.markdown_to_html(text)  # raw HTML off: no tag of a record can get through
        replace_file(html_path, "<!doctype html><html><head><meta charset='utf-8'><title>PCL reproduction report"
                     "</title><style>body{font-family:sans-serif;max-width:1200px;margin:auto}"
                     "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;"
                     "padding:2px 6px}img{max-width:100%}</style></head><body>" + body + "</body></html>")
    return {"md": out, "html": html_path, "figures": [p[0] for _, p in done], "notes": notes}


def main(argv: Sequence[str] | None = None) -> int:
    p = cli.parser("report.py", __doc__.split("\n\n")[0])
    p.add_argument("--out", default="report/report.md", type=cli.out_path(folder=False),
                   help="the report's path (default: report/report.md)")
    p.add_argument("--html", action="store_true", help="also write the report as HTML beside it")
    cli.add_figure_options(p, ("png",))
    args = p.parse_args(argv)
    stores = cli.stores(args)
    tables, skipped = build_tables(args.tables, stores, **cli.table_kwargs(args))
    written = build_report(tables, stores, args.out, skipped=skipped, html=args.html, formats=args.formats,
                           workers=args.workers, reuse=not args.redraw)
    print(f"report: {written['md']}" + (f" and {written['html']}" if written["html"] else "")
          + f" ({len(written['figures'])} figures)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
