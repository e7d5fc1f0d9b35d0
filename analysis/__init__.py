"""Analysis: run records -> the paper's tables, figures and a one-page report (pandas, matplotlib; no torch to read).

    python analysis/make_tables.py [--tables table2 ...] [--store results --store mongodb://...]
    python analysis/make_plots.py  [same options]
    python analysis/report.py      [same options] [--out report.md] [--html]

Reference numbers: analysis/paper.py.
"""
