"""Issue 19, kind 2: nothing from a record is rendered unescaped.

A file store holds hand-written records whose config strings (experiment, comment, label, data_root, options)
carry HTML, Markdown structure (newlines + `# heading`, `|`), LaTeX commands, spreadsheet formulas, mathtext and
terminal escape codes; every renderer of analysis/ (HTML report, Markdown, LaTeX, CSV, plot labels, terminal
lines) must show them as text. No training: the plan is written by hand, the tables are built from it.
"""
from __future__ import annotations

import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from analysis import cli, escape, render, report, runs, tables

SCRIPT = "<script>alert('x')</script>"
IMG = '<img src=x onerror="alert(1)">'
HEADING = "line\n# pwned heading\n\n| a | b |"
LATEX = r"\input{/etc/passwd} $x^2$ 50% & #1 _{}~"
FORMULA = "=HYPERLINK(\"http://evil\",\"click\")"
MATH = r"$\undefinedcommand{x}$"
ESC = "\x1b[2J\x1b]0;title\x07\u202eevil"
HOSTILE = [SCRIPT, IMG, HEADING, LATEX, FORMULA, MATH, ESC, "[link](javascript:alert(1)) `code` **bold** |pipe|"]


def _plan(labels: list[str]) -> list[dict]:
    return [{"run_key": f"key{i}", "label": f"{label}/s0", "method": "pcl", "backbone": "resnet32",
             "dataset": "cifar100", "seed": 0, "peers": 3, "experiment": "ablation_components", "options": {}}
            for i, label in enumerate(labels)]


def _write_record(root: Path, number: int, run_key: str, experiment: str, value: float) -> None:
    run_dir = root / str(number)
    run_dir.mkdir(parents=True)
    config = {"run_key": run_key, "experiment": experiment, "comment": SCRIPT + HEADING, "dataset": "cifar100",
              "method": "pcl", "backbone": "resnet32", "seed": 0, "label": IMG, "data_root": LATEX,
              "options": {"note": FORMULA}, "epochs": 2, "milestones": [1]}
    run = {"status": "COMPLETED", "result": {"deployed/top1_err": value}, "meta": {"attempt_id": f"a{number}"},
           "start_time": "2026-01-01T00:00:00", "stop_time": f"2026-01-01T00:0{number}:00",
           "experiment": {"name": experiment}, "host": {"hostname": ESC}}
    info = {"deployed_head": "mean_peer1", "num_classes": 100, "parameter_counts": {"params_train": 100,
                                                                                     "params_deployed": 50}}
    metrics = {"test/top1_err/deployed": {"steps": [1, 2], "values": [60.0, value],
                                          "timestamps": ["2026-01-01T00:00:00", "2026-01-01T00:01:00"]}}
    for name, body in (("config", config), ("run", run), ("info", info), ("metrics", metrics)):
        (run_dir / f"{name}.json").write_text(json.dumps(body))


@pytest.fixture()
def hostile_tables(tmp_path):
    store = tmp_path / "results"
    plan = _plan(HOSTILE)
    for i, run in enumerate(plan):
        _write_record(store, i + 1, run["run_key"], HOSTILE[i % len(HOSTILE)], 30.0 + i)
    attempts = runs.read_attempts([str(store)])
    table = tables.build_table("ablations.components", plan, attempts, stores=f"file store {store}")
    return table, store


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def _assert_inert_markdown(text: str) -> None:
    assert "<script" not in text and "<img" not in text, "raw HTML in the Markdown"
    assert not re.search(r"^\s*#+ pwned", text, re.M), "a record's newline made a heading"
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
    assert "](javascript:" not in text.replace("\\](javascript:", "")
    for block in re.split(r"\n\s*\n", text):  # every pipe table keeps one cell per column on every row
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            assert len({_pipes(r) for r in rows}) == 1, block


def test_markdown_table_shows_record_text_as_text(hostile_tables):
    table, _ = hostile_tables
    assert any("recorded by another script's grid" in n for n in table.notes)  # the record's names reach notes
    text = render.render_markdown(table)
    _assert_inert_markdown(text)
    assert "&lt;script&gt;" in text  # shown, not dropped


def test_latex_and_csv_are_inert(hostile_tables):
    table, _ = hostile_tables
    tex = render.render_latex(table)
    assert r"\input{" not in tex and "\x1b" not in tex
    assert "\n# pwned" not in tex and "\n\n" not in tex.split(r"\begin{tabular}")[1]  # no paragraph break
    rows = list(csv.reader(io.StringIO(render.cells_csv(table))))
    assert all(not cell.startswith(("=", "+", "-", "@")) or cell.lstrip("+-").replace(".", "").isdigit()
               for row in rows for cell in row if cell and not cell[0].isdigit())


def test_html_report_has_no_tag_from_a_record(hostile_tables, tmp_path):
    table, store = hostile_tables
    skipped = [f"table x: none of the runs, the store holds runs of: {SCRIPT} on {IMG}"]
    written = report.build_report([table], [str(store)], tmp_path / "r" / "report.md", skipped=skipped, html=True)
    md = written["md"].read_text()
    _assert_inert_markdown(md)
    page = written["html"].read_text()
    parser = _Tags()
    parser.feed(page)
    allowed = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "ul", "li", "table",
               "thead", "tbody", "tr", "th", "td", "strong", "em", "code", "img"}
    assert {t for t, _ in parser.tags} <= allowed
    for tag, attrs in parser.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("figures/") and attrs["src"].endswith(".png")
    assert "&lt;script&gt;" in page
    assert written["figures"], "the error curves were drawn (labels with mathtext did not break them)"


def test_plot_labels_with_mathtext_do_not_break_the_figure(hostile_tables, tmp_path):
    from analysis import plots

    table, _ = hostile_tables
    done, _ = plots.make_figures([table], tmp_path / "figs", keep=True)
    assert done
    figure = done[0][0].figure
    labels = [t.get_text() for ax in figure.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert any(r"\$" in label for label in labels) and all("\n" not in label for label in labels)


def test_terminal_error_line_has_no_escape_codes(capsys):
    def main(argv):
        raise runs.AnalysisError(f"the store holds runs of: {ESC}\n{HEADING}")

    assert cli.run_main(main, []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "\x07" not in err and "\u202e" not in err


@pytest.mark.parametrize("value", HOSTILE + ["", None, 3.5, float("nan"), "x" * 10000, "\u2028\u2029"])
def test_escape_functions_are_one_line_and_inert(value):
    md = escape.markdown(value)
    assert "\n" not in md and "<" not in md and not re.search(r"(?<!\\)[`*\[\]|]", md)
    assert len(md) <= 2 * escape.LIMIT
    tex = escape.latex(value)
    assert "\n" not in tex and not re.search(r"(?<!\\)[$%&#_{}]", tex.replace(r"\textbackslash{}", "")
                                               .replace(r"\textless{}", "").replace(r"\textgreater{}", "")
                                               .replace(r"\textbar{}", "").replace(r"\textasciitilde{}", "")
                                               .replace(r"\textasciicircum{}", ""))
    assert "<" not in str(escape.html(value)) and ">" not in str(escape.html(value))
    assert "$" not in escape.plot(value).replace(r"\$", "")
    assert not any(ch in escape.terminal(value) for ch in "\x1b\x07\n\r\u202e")
    cell = escape.csv_cell(value)
    assert not isinstance(cell, str) or not cell.startswith(("=", "+", "-", "@"))
    assert escape.markdown(escape.Markdown("`kept`")) == "`kept`"  # the suite's own Markdown passes
