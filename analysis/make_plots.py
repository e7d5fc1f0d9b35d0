"""`python analysis/make_plots.py`: the study's figures (PNG + PDF; --formats png pdf svg) into --out, from the same tables as
make_tables.py: error over training per method, error vs number of peers, ablation bars with the paper's
differences, deployed head vs live peers vs ensemble, and peer diversity (when the runs logged `test/diversity`).

    python analysis/make_plots.py                              # every plan with runs in results/ (+ $PCL_MONGO_URL)
    python analysis/make_plots.py --tables ablations.peers --store mongodb://host/pcl --out figures

Exit codes: 0 figures written; 2 bad input (as make_tables.py).
"""
from __future__ import annotations

import sys
from typing import Sequence

from analysis import cli, escape
from analysis.tables import build_tables


def main(argv: Sequence[str] | None = None) -> int:
    from analysis.plots import make_figures

    p = cli.parser("make_plots.py", __doc__.split("\n\n")[0])
    p.add_argument("--out", default="figures", type=cli.out_path(folder=True), help="output folder (default: figures)")
    cli.add_figure_options(p, ("png", "pdf"))
    args = p.parse_args(argv)
    tables, skipped = build_tables(args.tables, cli.stores(args), **cli.table_kwargs(args))
    done, notes = make_figures(tables, args.out, formats=args.formats, workers=args.workers, reuse=not args.redraw)
    for figure, paths in done:
        also = "".join(f", {p.suffix}" for p in paths[1:])
        print(f"{paths[0]}{f' (+ {also[2:]})' if also else ''}: {escape.terminal(figure.caption)}")
    for line in notes + [f"skipped: {s}" for s in skipped]:
        print(escape.terminal(line))
    kept = sum(figure.kept for figure, _ in done)
    print(f"{len(done) - kept} figure(s) drawn, {kept} kept (their tables' records did not change; --redraw draws "
          "them again)" if kept else f"{len(done)} figure(s) drawn")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
