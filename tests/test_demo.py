"""``downsize demo`` runs the whole loop offline and reports figures it computed."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from downsize.cli import app
from downsize.demo import run_demo


def test_demo_end_to_end(tmp_path: Path) -> None:
    figs = run_demo(tmp_path / "demo", teacher_latency_ms=0, student="tfidf")
    a, b = figs["teacher_only"], figs["cascade"]
    assert a["accuracy"] == 1.0  # the replay teacher answers with the recorded (gold) labels
    assert 0.5 < b["share_local"] < 1.0
    assert b["accuracy"] >= 0.95
    assert b["cost_per_1k_usd"] < a["cost_per_1k_usd"]
    assert (tmp_path / "demo" / "predictions.csv").exists()
    assert (tmp_path / "demo" / "coverage-accuracy.png").exists()
    assert figs["report"] and Path(figs["report"]).exists()
    # the CLI re-runs into the same directory (the demo recreates its own directory)...
    r = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path / "demo"), "--student", "tfidf",
                                 "--teacher-latency-ms", "0"])
    assert r.exit_code == 0, r.output
    assert "before / after" in r.output and "answered locally" in r.output
    # ...but never deletes a directory it did not create
    other = tmp_path / "mine"
    other.mkdir()
    r = CliRunner().invoke(app, ["demo", "--dir", str(other)])
    assert r.exit_code == 1 and "not a downsize demo directory" in r.output
    assert other.exists()
