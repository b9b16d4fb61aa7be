"""The loop end to end on real parts: replay teacher on loopback → label → train → calibrate →
cascade → eval, plus the bad-input paths of train/calibrate/predict/eval."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import numpy as np
import pytest

from downsize.data import read_texts
from downsize.demo import demo_data
from downsize.errors import CalibrationError, CorruptArtifactError, DataError, NotCalibratedError, StudentError
from downsize.project import Project
from downsize.replay import ReplayServer
from downsize.training import student_dir

CONFIG = """\
store: sqlite:///.downsize/downsize.db
teachers:
  default:
    base_url: {url}
    model: replay
    price_per_1m_input: 2.5
    price_per_1m_output: 10
    max_concurrency: 16
    timeout_s: 5
    max_retries: 1
tasks:
  news:
    instructions: Route the story.
    labels: {{earn: e, acq: a, crude: c, trade: t, money-fx: m, interest: i, ship: s, grain: g}}
    student: tfidf
    alpha: 0.05
"""


@pytest.fixture(scope="module")
def reuters() -> tuple[list[str], list[str], list[str], list[str]]:
    train, test = demo_data()
    tr = read_texts(train, label_col="label", limit=1200)
    te = read_texts(test, label_col="label", limit=300)
    return tr.texts, tr.labels or [], te.texts, te.labels or []


@pytest.fixture(scope="module")
def replay(reuters):  # type: ignore[no-untyped-def]
    Xtr, ytr, Xte, yte = reuters
    with ReplayServer(dict(zip(Xtr + Xte, ytr + yte))) as srv:
        yield srv


def _write(path: Path, texts: list[str], labels: list[str] | None = None) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"] if labels is not None else ["text"])
        for i, t in enumerate(texts):
            w.writerow([t, labels[i]] if labels is not None else [t])
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory, replay, reuters):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("proj")
    (d / "downsize.yaml").write_text(CONFIG.format(url=replay.base_url))
    Xtr, ytr, Xte, yte = reuters
    _write(d / "train.csv", Xtr)
    _write(d / "test.csv", Xte, yte)
    p = Project.open(d / "downsize.yaml")
    p.label("news", d / "train.csv", progress=False)
    p.train("news")
    p.calibrate("news")
    yield p
    p.close()


def test_calibrated_cascade_keeps_its_promise_on_fresh_data(project: Project, reuters) -> None:  # type: ignore[no-untyped-def]
    run = project.store.latest_calibration("news")
    assert run is not None and run.threshold is not None and run.reference == "teacher"
    assert run.coverage > 0.5
    d = project.config.base_dir
    s = project.predict("news", d / "test.csv", d / "out.csv", progress=False)
    out = read_texts(d / "out.csv", "text", label_col="downsize_label")  # the input's gold label stays "label"
    assert s.rows == len(out) == len(reuters[2])  # every row answered
    answered_by = [r["answered_by"] for r in csv.DictReader(open(d / "out.csv"))]
    assert set(answered_by) <= {"student", "teacher"}
    gold = dict(zip(reuters[2], reuters[3]))
    local = [(x, lab) for x, lab, by in zip(out.texts, out.labels or [], answered_by) if by == "student"]
    disagree = np.mean([gold[x] != lab for x, lab in local])
    assert disagree <= 0.05 + 0.03  # α plus sampling slack on 300 rows
    assert s.share_local == pytest.approx(len(local) / s.rows)
    assert s.cost_usd < s.teacher_only_cost_usd
    # one audit row per answered request
    from sqlalchemy import func, select

    from downsize.store import RequestLog

    with project.store.session() as ss:
        assert ss.scalar(select(func.count()).select_from(RequestLog).where(RequestLog.channel == "batch")) == s.rows
        # the summary's teacher-only baseline is the one the audit log (and so the report) holds
        logged = ss.scalar(select(func.sum(RequestLog.teacher_only_cost_usd)).where(RequestLog.channel == "batch"))
    assert s.teacher_only_cost_usd == pytest.approx(logged)


def test_eval_against_gold_and_plot(project: Project, tmp_path: Path) -> None:
    from downsize.evaluation import evaluate_file

    d = project.config.base_dir
    r = evaluate_file(project, "news", d / "test.csv", plot=tmp_path / "c.png", progress=False)
    assert r.teacher is not None and r.teacher["accuracy"] == 1.0  # the replay teacher is gold here
    assert r.cascade is not None and r.cascade["accuracy"] >= r.student["accuracy"]
    assert r.cascade["accuracy"] >= 0.95
    covs = [c["coverage"] for c in r.curve]
    assert covs == sorted(covs, reverse=True) and covs[0] == 1.0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert r.eval_run_id is not None


def test_eval_rejects_unseen_gold_labels(project: Project, tmp_path: Path, reuters) -> None:  # type: ignore[no-untyped-def]
    from downsize.evaluation import evaluate_file

    p = _write(tmp_path / "g.csv", reuters[2][:3], ["earn", "sports", "acq"])
    with pytest.raises(DataError, match=r"g\.csv: 1 row\(s\) have labels not configured.*'sports'.*line 3"):
        evaluate_file(project, "news", p, use_teacher=False, progress=False)


def test_teacher_down_falls_back_to_the_student_and_drops_nothing(project: Project, reuters) -> None:  # type: ignore[no-untyped-def]
    dead = project.config.teachers["default"].model_copy(update={"base_url": "http://127.0.0.1:9/v1", "max_retries": 0})
    p = Project(project.config.model_copy(update={"teachers": {"default": dead}}), store=project.store)
    texts = reuters[2][:40]

    async def go() -> list:  # type: ignore[type-arg]
        async with p.teacher("news") as teacher:
            cas = p.cascade("news", teacher=teacher)
            cas.threshold = 0.995  # force escalations
            return await cas.apredict(texts)

    decisions = asyncio.run(go())
    assert len(decisions) == 40
    assert {x.answered_by for x in decisions} == {"student", "student_fallback"}
    fb = [x for x in decisions if x.answered_by == "student_fallback"]
    assert all(x.teacher_error and x.answer == x.student_answer and "teacher failed" in x.reason for x in fb)


def test_corrupted_student_file_is_detected(project: Project) -> None:
    sv = project.store.latest_student("news")
    files = [f for f in student_dir(sv, project.config.home_dir()).iterdir() if f.name != "manifest.json"]
    victim = max(files, key=lambda f: f.stat().st_size)
    data = bytearray(victim.read_bytes())
    orig = bytes(data)
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    try:
        with pytest.raises(CorruptArtifactError, match=victim.name):
            project.cascade("news")
    finally:
        victim.write_bytes(orig)
    assert project.cascade("news").threshold is not None


def _fresh(tmp_path: Path, url: str) -> Project:
    (tmp_path / "downsize.yaml").write_text(CONFIG.format(url=url))
    return Project.open(tmp_path / "downsize.yaml")


def test_calibrate_before_train_and_predict_before_calibrate(tmp_path: Path, replay) -> None:  # type: ignore[no-untyped-def]
    with _fresh(tmp_path, replay.base_url) as p:
        with pytest.raises(CalibrationError, match="no trained student: run `downsize train news` first"):
            p.calibrate("news")
        with pytest.raises(NotCalibratedError, match="has no student"):
            p.cascade("news")
        with pytest.raises(StudentError, match="no labelled examples yet"):
            p.train("news")


def test_training_errors_name_the_label(tmp_path: Path, replay) -> None:  # type: ignore[no-untyped-def]
    with _fresh(tmp_path, replay.base_url) as p:
        ids = p.store.add_examples("news", [f"text {i}" for i in range(30)])
        p.store.add_labels("news", [(i, "earn") for i in ids], source="gold")
        with pytest.raises(StudentError, match="all 30 labelled examples have the label 'earn'"):
            p.train("news")
        p.store.add_labels("news", [(ids[0], "acq"), (ids[1], "acq")], source="gold")  # newer gold wins
        # too few for a student: 'acq' is left to the teacher, and one label is not enough to learn
        with pytest.raises(StudentError, match=r"have the label 'earn'.*left to the teacher: 'acq' \(2 example\(s\), "
                           r"fewer than min_examples_per_label=5\)"):
            p.train("news")
        p.store.add_labels("news", [(ids[2], "sports")], source="gold")
        with pytest.raises(StudentError, match=r"labels \['sports'\] are not among the configured labels"):
            p.train("news")


def test_gold_overrides_teacher_in_training(project: Project, tmp_path: Path, reuters) -> None:  # type: ignore[no-untyped-def]
    text = reuters[0][0]
    other = "grain" if reuters[1][0] != "grain" else "ship"
    p = _write(tmp_path / "gold.csv", [text], [other])
    assert project.add_gold("news", p) == 1
    eff = {e.text: e for e in project.store.labelled_examples("news")}
    assert eff[text].label == other and eff[text].source == "gold"
