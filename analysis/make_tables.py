"""`python analysis/make_tables.py`: the paper's tables from the runs of each script's plan, printed and written as
Markdown, LaTeX (booktabs) and CSV into --out, each cell beside the paper's number (analysis/paper.py).

    python analysis/make_tables.py                   # every plan with runs in results/ (+ $PCL_MONGO_URL)
    python analysis/make_tables.py --tables table2 --datasets cifar100 --store mongodb://host/pcl
    python analysis/make_tables.py --named smoke --set epochs=2      # the plan of `with smoke epochs=2`
    python analysis/make_tables.py --select best                     # best epoch on the TEST set (marked)

Exit codes: 0 tables written; 2 bad input (unknown table, empty/unreachable store, no runs).
"""
from __future__ import annotations

import sys
from typing import Sequence

from analysis import cli, escape
from analysis.render import render_markdown, write_table
from analysis.tables import build_tables


def main(argv: Sequence[str] | None = None) -> int:
    p = cli.parser("make_tables.py", __doc__.split("\n\n")[0])
    p.add_argument("--out", default="tables", type=cli.out_path(folder=True), help="output folder (default: tables)")
    args = p.parse_args(argv)
    tables, skipped = build_tables(args.tables, cli.stores(args), **cli.table_kwargs(args))
    for table in tables:
        markdown = render_markdown(table)
        print(markdown)
        paths = write_table(table, args.out, markdown)
        print(f"written: {', '.join(str(p) for p in paths.values())}\n")
    for line in skipped:
        print(f"skipped: {escape.terminal(line)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_main(main))
