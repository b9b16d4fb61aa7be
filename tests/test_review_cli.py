"""``downsize review``: the queue in the terminal driven by stdin, and add / fill / export / import."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from _review_data import LABELS, log_traffic, reuters
from sqlalchemy import select
from typer.testing import CliRunner

from downsize.cli import app
from downsize.config import load_config
from downsize.review import ReviewQueue, add_texts
from downsize.store import Review, Store

YAML = """\
store: sqlite:///review.db
teachers:
  default: {{base_url: "http://127.0.0.1:9/v1", model: gpt-4o}}
tasks:
  news:
    instructions: Route the newswire story to its desk.
    labels: {{{labels}}}
    review_sample_rate: 0.0
{extra}"""


def _project(tmp_path: Path, extra: str = "") -> Path:
    p = tmp_path / "downsize.yaml"
    p.write_text(YAML.format(labels=", ".join(f"{k}: {k}" for k in LABELS), extra=extra))
    return p


@pytest.fixture
def cfg_path(tmp_path: Path) -> Path:
    path = _project(tmp_path)
    with Store(load_config(path).store_url()) as store:
        texts, labels = reuters(60)
        log_traffic(store, texts, labels)
    return path


def _run(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(app, list(args), input=input)


def test_the_terminal_by_keys_on_stdin(cfg_path: Path) -> None:
    cfg = load_config(cfg_path)
    big = "line of a long text\n" * 50_000
    with Store(cfg.store_url()) as store:
        add_texts(store, cfg, "news", ["[red]not markup[/red] <b>nor html</b>", big], source="odd.csv",
                  priority=500.0)
    keys = 'kk1as k u 2 e\n{"label": "trade"}\ne sports\nq'
    r = _run("review", "news", "-c", str(cfg_path), "--reviewer", "tty", input=keys)
    assert r.exit_code == 0, r.output
    assert "[red]not markup[/red] <b>nor html</b>" in r.output  # printed as it is
    assert f"… ({len(big) - 2000:,} more characters)" in r.output
    assert "not saved: 'sports' is not one of the labels" in r.output
    assert "undone: item" in r.output and "saved 'trade' as a human label" in r.output
    with Store(cfg.store_url()) as store:
        with store.session() as s:
            rows = s.scalars(select(Review).order_by(Review.id)).all()
        q = ReviewQueue(store, cfg)
        items = {rv.item_id: q.item(rv.item_id) for rv in rows}
    got = [(rv.action, rv.undone_at is not None) for rv in rows]
    assert got == [("skip", False), ("skip", False), ("pick", False), ("teacher", False), ("student", False),
                   ("skip", True), ("pick", False), ("edit", False)]
    assert {rv.reviewer for rv in rows} == {"tty"}
    ans = [rv for rv in rows if rv.action != "skip"]
    assert ans[0].answer == "earn" and ans[3].answer == "acq" and ans[4].answer == "trade"
    assert ans[1].answer == items[ans[1].item_id]["teacher"]["answer"]
    assert ans[2].answer == items[ans[2].item_id]["student"]["answer"]
    assert rows[5].item_id == rows[6].item_id  # the undone skip brought the item back


def test_add_fill_export_import(cfg_path: Path, tmp_path: Path) -> None:
    data = tmp_path / "push.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        w.writerows([["push one"], ["push two"], ["push one"]])
    r = _run("review", "add", "news", str(data), "-c", str(cfg_path), "--priority", "99")
    assert r.exit_code == 0 and "queued 2 new text(s)" in r.output, r.output
    r = _run("review", "fill", "news", "-c", str(cfg_path))
    assert r.exit_code == 0 and "disagreement 6" in r.output, r.output
    out = tmp_path / "q.jsonl"
    r = _run("review", "export", "news", str(out), "-c", str(cfg_path))
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["text"] for x in lines[:2]] == ["push one", "push two"]  # priority 99 first
    lines[0]["answer"], lines[1]["answer"] = {"label": "acq"}, "golf"
    out.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    r = _run("review", "import", str(out), "-c", str(cfg_path))
    assert r.exit_code == 2 and "q.jsonl:2: answer \"golf\"" in r.output and "nothing imported" in r.output
    lines[1]["answer"] = "earn"
    out.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    r = _run("review", "import", str(out), "-c", str(cfg_path), "--reviewer", "team")
    assert r.exit_code == 0 and "imported 2 answer(s)" in r.output, r.output
    with Store(load_config(cfg_path).store_url()) as store:
        effective = {e.text: (e.label, e.source) for e in store.labelled_examples("news")}
    assert effective["push one"] == ("acq", "human") and effective["push two"] == ("earn", "human")


def test_a_task_deleted_from_the_config(tmp_path: Path) -> None:
    path = _project(tmp_path, "  old:\n    instructions: x\n    labels: {a: a, b: b}\n")
    with Store(load_config(path).store_url()) as store:
        add_texts(store, load_config(path), "old", ["kept"], source="x")
    path = _project(tmp_path)
    r = _run("review", "old", "-c", str(path))
    assert r.exit_code == 2 and "its 1 review item(s) stay in the store" in " ".join(r.output.split())
