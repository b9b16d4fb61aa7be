"""The CLI is a thin layer: commands run, and errors become one clear line and an exit code."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from downsize.cli import app

runner = CliRunner()


def test_help_lists_the_loop() -> None:
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("init", "label", "train", "calibrate", "predict", "eval", "demo", "teacher"):
        assert cmd in r.output


def test_init_then_status(tmp_path: Path) -> None:
    cfg = tmp_path / "downsize.yaml"
    r = runner.invoke(app, ["init", str(cfg)])
    assert r.exit_code == 0 and cfg.exists()
    r = runner.invoke(app, ["status", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "tickets" in r.output
    r = runner.invoke(app, ["init", str(cfg)])
    assert r.exit_code == 2 and "already exists" in r.output


def test_config_error_is_one_line_and_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "downsize.yaml"
    cfg.write_text("tasks:\n  t:\n    instructions: x\n    labels: {a: 1, b: 2}\n    colour: red\n")
    r = runner.invoke(app, ["status", "--config", str(cfg)])
    assert r.exit_code == 2
    assert "Traceback" not in r.output
    assert "downsize.yaml:" in r.output and "colour" in r.output


def test_missing_data_file_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "downsize.yaml"
    runner.invoke(app, ["init", str(cfg)])
    r = runner.invoke(app, ["label", "tickets", str(tmp_path / "nope.csv"), "--config", str(cfg)])
    assert r.exit_code == 2 and "nope.csv: no such file" in r.output
