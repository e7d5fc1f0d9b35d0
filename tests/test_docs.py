"""The generated documents are what the code generates now (one command writes them all: `python -m pcl.docs`)."""
from __future__ import annotations

from pcl import docs


def test_every_generated_doc_is_current():
    assert docs.stale() == [], "generated docs are stale: run `python -m pcl.docs`"


def test_check_mode_names_a_stale_file(tmp_path, capsys, monkeypatch):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "config.md").write_text("old\n")
    assert docs.stale(tmp_path) == list(docs.GENERATED)  # one stale, the other missing
    monkeypatch.setattr(docs, "ROOT", tmp_path)
    assert docs.main(["--check"]) == 1
    assert "docs/config.md is stale: run `python -m pcl.docs`" in capsys.readouterr().err
