"""``student: auto`` on real parts (issue 15, issue 11 items 2 and 4): the replay teacher on
loopback, 600 real Rotten Tomatoes snippets, the real students. auto says what it will try, judges
every candidate (and their ensemble) on cross-fitted out-of-fold answers by the calibration's own
rule, fits each candidate K times and only the winner again, and calibrate prints what other α
would give and about how many labels the configured α needs."""

from __future__ import annotations

import csv
import gzip
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from downsize.calibration.whatif import ALPHAS, certified_by_alpha, held_back_by, labels_needed
from downsize.cli import app
from downsize.errors import CorruptArtifactError
from downsize.project import Project
from downsize.replay import ReplayServer
from downsize.students import EnsembleStudent, MiniLMStudent, TfidfStudent, available, load_student
from downsize.training import load_student_version

DATA = Path(__file__).parent / "data"
MINILM = available("minilm")

CONFIG = """\
store: sqlite:///.downsize/downsize.db
teachers:
  default: {{base_url: "{url}", model: replay, price_per_1m_input: 2.5, price_per_1m_output: 10,
             max_concurrency: 16, timeout_s: 10, max_retries: 1}}
tasks:
  rt:
    instructions: Is the review favourable?
    labels: {{positive: a favourable review, negative: an unfavourable review}}
    alpha: 0.1
"""


def _rows() -> tuple[list[str], list[str]]:
    with gzip.open(DATA / "rotten_tomatoes-sample.csv.gz", "rt", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [r["text"] for r in rows], [r["label"] for r in rows]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    texts, labels = _rows()
    d = tmp_path_factory.mktemp("auto")
    fits: Counter[str] = Counter()
    mp = pytest.MonkeyPatch()
    for cls in (TfidfStudent, MiniLMStudent):  # count the real fits (nothing is replaced)
        real = cls.fit

        def counted(self: Any, X: Any, y: Any, _real: Any = real, _name: str = cls.name) -> Any:
            fits[_name] += 1
            return _real(self, X, y)

        mp.setattr(cls, "fit", counted)
    with ReplayServer(dict(zip(texts, labels))) as replay:
        (d / "downsize.yaml").write_text(CONFIG.format(url=replay.base_url))
        with open(d / "in.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["text"])
            w.writerows([t] for t in texts)
        runner = CliRunner()
        cfg = str(d / "downsize.yaml")
        lab = runner.invoke(app, ["label", "rt", str(d / "in.csv"), "--config", cfg])
        assert lab.exit_code == 0, lab.output
        tr = runner.invoke(app, ["train", "rt", "--config", cfg], terminal_width=200)
        cal = runner.invoke(app, ["calibrate", "rt", "--config", cfg], terminal_width=200)
        mp.undo()
        with Project.open(d / "downsize.yaml") as p:
            yield {"train": tr, "calibrate": cal, "fits": fits, "project": p, "n": len(texts), "labels": labels}


def test_auto_says_up_front_what_it_will_try_and_what_each_candidate_certified(trained: dict[str, Any]) -> None:
    out = trained["train"].output
    assert trained["train"].exit_code == 0, out
    families = ["tfidf", "minilm"] if MINILM else ["tfidf"]
    first = next(line for line in out.splitlines() if line.strip())
    assert first.startswith("auto will try " + ", ".join(families)), first
    assert "certified" in out and "over folds" in out and "fit time" in out
    sv = trained["project"].store.latest_student("rt")
    rows = sv.metrics["selection"]
    assert [r["kind"] for r in rows][: len(families)] == families
    if MINILM:
        assert "ensemble(tfidf+minilm)" in out and any(r["members"] == ["tfidf", "minilm"] for r in rows)
    chosen = [r for r in rows if r.get("chosen")]
    assert len(chosen) == 1 and "✓" in out
    # the winner certifies the most (ties within half a point go to the cheaper one)
    assert chosen[0]["coverage"] >= max(r["coverage"] for r in rows) - 0.005
    assert sv.kind == ("ensemble" if chosen[0]["members"] else chosen[0]["kind"])
    for r in rows:
        if r["coverage"] > 0:
            assert len(r["coverage_folds"]) == 3 and min(r["coverage_folds"]) <= r["coverage"] <= max(r["coverage_folds"])


def test_each_candidate_is_fitted_once_per_fold_and_only_the_winner_again(trained: dict[str, Any]) -> None:
    sv = trained["project"].store.latest_student("rt")
    chosen = next(r for r in sv.metrics["selection"] if r.get("chosen"))
    winners = set(chosen["members"] or [chosen["kind"]])
    for family in ["tfidf", "minilm"] if MINILM else ["tfidf"]:
        assert trained["fits"][family] == 3 + (family in winners), (family, trained["fits"])


def test_the_threshold_is_calibrated_on_out_of_fold_answers_of_every_row(trained: dict[str, Any]) -> None:
    p, n = trained["project"], trained["n"]
    sv = p.store.latest_student("rt")
    assert sv.n_train == sv.n_calib == n and len(sv.calib_example_ids) == n
    run = p.store.latest_calibration("rt")
    assert run.n_calib == n and run.method.endswith("-crossfit3")
    # the stored confidences are not the refit's own (it has seen every row): it is more sure of them
    oof = np.array(sv.metrics["oof"]["confidence"])
    student = load_student_version(sv, p.config.home_dir())
    texts = [e.text for e in sorted(p.store.labelled_examples("rt"), key=lambda e: e.example_id)]
    assert student.confidence(texts).mean() > oof.mean()
    if run.threshold is not None:
        assert run.coverage == pytest.approx(float(np.mean(oof >= run.threshold)))


def test_calibrate_prints_what_other_alpha_would_give_and_what_it_would_take(trained: dict[str, Any]) -> None:
    out = trained["calibrate"].output
    assert trained["calibrate"].exit_code == 0, out
    assert "what other alpha would give" in out and "$ saved per 1k requests" in out
    for a in ("1%", "2%", "5%", "10%", "20%"):
        assert a in out
    w = trained["project"].store.latest_calibration("rt").details["what_if"]
    cov = [r["coverage"] for r in w["by_alpha"]]
    assert [r["alpha"] for r in w["by_alpha"]] == list(ALPHAS) and cov == sorted(cov)  # more α, more coverage
    assert all(r["saved_usd_per_1k"] == pytest.approx(r["coverage"] * w["cost_per_request_usd"] * 1000)
               for r in w["by_alpha"])
    assert w["cost_per_request_usd"] > 0
    assert "estimate" in out and {h["label"] for h in w["held_back_by"]} <= {"positive", "negative"}


def test_an_ensemble_saves_and_loads_its_members_and_refuses_a_changed_one(tmp_path: Path) -> None:
    texts, labels = _rows()
    a = TfidfStudent(min_df=1, char_ngrams=None).fit(texts[:400], labels[:400])
    b = TfidfStudent(min_df=1, classifier="logreg").fit(texts[:400], labels[:400])
    ens = EnsembleStudent.from_fitted({"tfidf": a, "tfidf_lr": b})
    p = ens.predict_proba(texts[400:])
    assert np.allclose(p, (a.predict_proba(texts[400:]) + b.predict_proba(texts[400:])) / 2)
    ens.save(tmp_path / "e")
    back = load_student(tmp_path / "e")
    assert isinstance(back, EnsembleStudent) and np.allclose(back.predict_proba(texts[400:]), p)
    m = tmp_path / "e" / "m1" / "manifest.json"
    m.write_text(m.read_text().replace('"n_train"', '"n_train" ', 1))
    with pytest.raises(CorruptArtifactError):
        load_student(tmp_path / "e")


def test_labels_needed_is_an_estimate_that_more_labels_bear_out() -> None:
    """600 rows, 3 % errors spread evenly among the confident half (so the observed rate is the
    true one): α = 5 % certifies nothing today; as many rows as estimated, drawn fresh from the same
    distribution, certify at least 30 % in most draws."""
    rng = np.random.default_rng(3)
    n = 600
    s, loss = np.linspace(1, 0, n, endpoint=False), np.zeros(n)
    top, bottom = np.arange(n // 2), np.arange(n // 2, n)
    loss[top[top % 33 == 16]] = 1
    loss[bottom[rng.uniform(size=len(bottom)) < 0.3]] = 1
    today = certified_by_alpha(s, loss, delta=0.05, bound="binomial")
    assert next(r for r in today if r["alpha"] == 0.05)["coverage"] == 0.0
    need = labels_needed(s, loss, alpha=0.05, delta=0.05, bound="binomial")
    assert need is not None and need["more"] > 0 and need["coverage"] == pytest.approx(0.5)
    wins = 0
    for _ in range(20):
        s2 = rng.uniform(size=need["total"])
        l2 = (rng.uniform(size=len(s2)) < np.where(s2 > 0.5, 0.03, 0.3)).astype(float)
        wins += certified_by_alpha(s2, l2, delta=0.05, bound="binomial", alphas=(0.05,))[0]["coverage"] >= 0.3
    assert wins >= 8
    held = held_back_by(s, loss, ["x" if v < 0.7 else "y" for v in s], parts=lambda a: [a], coverage=0.5)
    assert held and all(h["loss"] > 0 for h in held) and sum(h["share_of_loss"] for h in held) == pytest.approx(1)


def test_the_report_says_what_it_would_take_when_little_is_certified(trained: dict[str, Any]) -> None:
    from downsize.report import build_report

    p = trained["project"]
    rep = build_report(p.store, p.config)
    steps = [s for s in rep["next_steps"] if s["kind"] == "what_it_would_take"]
    run = p.store.latest_calibration("rt")
    assert bool(steps) == (run.coverage < 0.5)
    if steps:
        assert "α = 20.0 %" in steps[0]["detail"] and "saved per 1k requests" in steps[0]["detail"]
