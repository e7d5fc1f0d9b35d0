"""Analysis: run records -> the paper's tables, figures and a one-page report (pandas, matplotlib; no torch to read).

    python analysis/make_tables.py [--tables table2 ...] [--store results --store mongodb://...]
    python analysis/make_plots.py  [same options]
    python analysis/report.py      [same options] [--out report.md] [--html]

Reference numbers: analysis/paper.py.
"""

from pcl.flags import check_declarations

# every command of this package reads the methods' and backbones' declarations while importing its modules: read
# them first, so that a mistake in one is the command's one line, exit 2 (not a traceback through the imports)
check_declarations()
