"""``downsize synth``: the teacher writes examples per label, verified, de-duplicated, cached and budgeted.

The teacher is the replay server with a generation pool (real Rotten Tomatoes snippets kept apart
from training): a generation request for a label is answered with a recorded example of it.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest
from typer.testing import CliRunner

from downsize.cli import app
from downsize.data.synth import NearDuplicates, clean_generated
from downsize.errors import CalibrationError
from downsize.project import Project
from downsize.replay import ReplayServer
from downsize.teacher.prompt import build_generation_messages, generation_target

DATA = Path(__file__).parent / "data"
CONFIG = """\
store: sqlite:///{home}/downsize.db
teachers:
  default: {{base_url: "{url}", model: replay, price_per_1m_input: 2.5, price_per_1m_output: 10,
             max_concurrency: 8, timeout_s: 10, max_retries: 1}}
tasks:
  reviews:
    kind: classify
    instructions: Is the movie review positive or negative?
    labels: {{positive: the reviewer liked it, negative: the reviewer did not}}
    alpha: 0.2
    synthetic_weight: {weight}
"""
runner = CliRunner()


@pytest.fixture(scope="module")
def rt() -> list[tuple[str, str]]:
    with gzip.open(DATA / "rotten_tomatoes-sample.csv.gz", "rt", encoding="utf-8") as fh:
        return [(r["text"], r["label"]) for r in csv.DictReader(fh)]


def _project(tmp_path: Path, url: str, weight: float = 1.0) -> Path:
    cfg = tmp_path / "downsize.yaml"
    cfg.write_text(CONFIG.format(home=tmp_path, url=url, weight=weight))
    return cfg


def test_the_generation_protocol_reads_back() -> None:
    from downsize.config import ClassifyTask

    task = ClassifyTask(instructions="Sentiment.", labels={"positive": "", "negative": ""})
    msgs = build_generation_messages(task, "positive", 7)
    assert generation_target(msgs) == ("positive", 7)
    assert generation_target([{"role": "system", "content": task.prompt()}, {"role": "user", "content": "x"}]) is None
    assert build_generation_messages(task, "positive", 8) != msgs  # each variation is its own (cached) call


def test_cleaning_and_near_duplicates() -> None:
    assert clean_generated('Input: "A fine, warm film."') == "A fine, warm film."
    assert clean_generated("  a  film \n") == "a film"
    seen = NearDuplicates(0.8)
    assert seen.add("the acting is superb and the story moves along briskly from start to end")
    assert not seen.add("The acting is superb and the story moves along briskly from start to end!")  # exact after folding
    assert not seen.add("the acting is superb and the story moves along briskly from start to the end")  # near
    assert seen.add("a dull, lifeless script that never finds its footing")


def test_synth_keeps_verified_examples_and_pays_once(tmp_path: Path, rt: list[tuple[str, str]]) -> None:
    pool = dict(rt[:120])
    positive = [t for t, y in rt[:120] if y == "positive"]
    near = positive[0] + " !"  # a near duplicate of a pool text, recorded as positive too
    liar = positive[1]  # generated for "positive" but the teacher, asked to classify it, says negative
    pool = {near: "positive", **pool}
    with ReplayServer({liar: "negative"}, pool=pool) as replay:
        cfg = _project(tmp_path, replay.base_url)
        with Project.open(cfg) as p:
            s = p.synth("reviews", 6, progress=False)
            ex = p.store.labelled_examples("reviews")
        assert s.stopped_reason is None and {n: c["kept"] for n, c in s.targets.items()} == {"positive": 6, "negative": 6}
        assert {e.source for e in ex} == {"synthetic"} and len(ex) == 12
        recorded = {clean_generated(t): y for t, y in pool.items()}  # a written text is read back cleaned
        assert all(recorded[e.text] == e.label for e in ex) and liar not in {e.text for e in ex}
        assert s.targets["positive"]["rejected"] >= 1 and s.targets["positive"]["duplicates"] >= 1
        paid = replay.stats["requests"]
        assert paid == s.generation_calls + s.verification_calls
        again = runner.invoke(app, ["synth", "reviews", "--per-label", "6", "-c", str(cfg)], env={"COLUMNS": "200"})
        assert again.exit_code == 0, again.output
        assert replay.stats["requests"] == paid  # everything was asked already: nothing is paid twice
        assert "only synthetic examples" in again.output
        with Project.open(cfg) as p:
            assert len(p.store.labelled_examples("reviews")) == 12
            # more per label later: only the new requests are paid
            s2 = p.synth("reviews", 8, progress=False)
            assert {c["kept"] for c in s2.targets.values()} == {8}
            assert s2.generation_calls + s2.verification_calls == replay.stats["requests"] - paid


def test_synth_stops_at_the_budget(tmp_path: Path, rt: list[tuple[str, str]]) -> None:
    with ReplayServer({}, pool=dict(rt[:100])) as replay:
        cfg = _project(tmp_path, replay.base_url)
        r = runner.invoke(app, ["synth", "reviews", "--per-label", "20", "--budget", "0.01", "-c", str(cfg)],
                          env={"COLUMNS": "200"})
        assert r.exit_code == 4, r.output
        assert "budget" in r.output
        with Project.open(cfg) as p:
            spent = p.store.teacher_spend(task="reviews")
        assert 0 < spent <= 0.01


def test_synthetic_rows_train_but_never_calibrate(tmp_path: Path, rt: list[tuple[str, str]]) -> None:
    pool, real = dict(rt[:200]), rt[200:600]
    with ReplayServer(dict(real), pool=pool) as replay:
        cfg = _project(tmp_path, replay.base_url, weight=2.0)
        with Project.open(cfg) as p:
            p.synth("reviews", 20, progress=False)
            tr = p.train("reviews", kind="tfidf")
            assert tr.n_calib == 0 and tr.n_synthetic == 80 and "calibration" in tr.notes[0]
            with pytest.raises(CalibrationError, match="needs real traffic"):
                p.calibrate("reviews")
            (tmp_path / "real.csv").write_text("text\n" + "".join(f'"{t.replace(chr(34), chr(39))}"\n' for t, _ in real))
            p.label("reviews", tmp_path / "real.csv", progress=False)
            tr = p.train("reviews", kind="tfidf")
            sv = p.store.latest_student("reviews")
            synth_ids = {e.example_id for e in p.store.labelled_examples("reviews") if e.source == "synthetic"}
            assert tr.n_calib > 0 and not set(sv.calib_example_ids) & synth_ids
            assert tr.n_synthetic == 80  # weight 2: each of the 40 synthetic rows counts twice
            run, _ = p.calibrate("reviews")
            assert run.reference == "teacher" and run.n_calib == tr.n_calib
