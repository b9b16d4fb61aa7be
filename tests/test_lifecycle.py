"""downsize.lifecycle: the live pointer, promotion gate, rollback, resume, retrain, recalibrate,
the monitors' store sync — on a real SQLite store and real tfidf students (Reuters R8 demo)."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from downsize import lifecycle
from downsize.config import Config
from downsize.data import read_texts
from downsize.errors import LifecycleError
from downsize.store import Label, SpotCheck, Store, StudentVersion, TaskEvent
from downsize.training import calibrate_task, student_dir, train_task

ASSETS = Path(__file__).resolve().parents[1] / "src" / "downsize" / "_assets"
LABELS = ["earn", "acq", "crude", "trade", "money-fx", "interest", "ship", "grain"]


@pytest.fixture(scope="module")
def demo() -> dict[str, list[Any]]:
    tr = read_texts(ASSETS / "reuters_r8_demo-train.csv.gz", label_col="label")
    te = read_texts(ASSETS / "reuters_r8_demo-test.csv.gz", label_col="label")
    return {"train": list(zip(tr.texts, tr.labels or [])), "test": list(zip(te.texts, te.labels or []))}


def make_config(tmp_path: Path, **task: Any) -> Config:
    return Config.model_validate({
        "store": f"sqlite:///{tmp_path / 'd.db'}", "home": str(tmp_path / ".downsize"),
        "teachers": {"default": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}},
        "tasks": {"news": {"instructions": "Route the story.", "labels": {k: k for k in LABELS},
                           "student": "tfidf", "alpha": 0.1, "retrain_min_labels": 100, **task}},
    })


def add(store: Store, rows: list[tuple[str, str]], origin: str | None) -> None:
    ids = store.add_examples("news", [t for t, _ in rows], source=f"test:{origin}")
    store.add_labels("news", list(zip(ids, [y for _, y in rows])), source="teacher", origin=origin)


@pytest.fixture
def proj(tmp_path: Path, demo: dict[str, list[Any]]) -> tuple[Config, Store]:
    cfg = make_config(tmp_path)
    store = Store(cfg.store_url())
    add(store, demo["train"][:1200], None)
    train_task(store, cfg, "news", kind="tfidf")
    run, _ = calibrate_task(store, cfg, "news")
    assert run.threshold is not None
    yield cfg, store
    store.close()


def test_legacy_live_is_the_newest_calibrated_student(proj: tuple[Config, Store]) -> None:
    _cfg, store = proj
    now = lifecycle.live(store, "news")
    assert now.student is not None and now.student.version == 1 and now.calibration is not None
    assert not now.suspended and now.epoch == 1 and now.head is None


def test_retrain_gates_promotes_and_rolls_back(proj: tuple[Config, Store], demo: dict[str, list[Any]]) -> None:
    cfg, store = proj
    add(store, demo["test"][:600], "shadow")
    res = lifecycle.retrain_task(store, cfg, "news")
    assert res.action == "retrained" and res.passed and res.promoted, res.message
    now = lifecycle.live(store, "news")
    assert now.student.version == 2 and now.calibration.id == res.calibration_run_id and now.epoch == 2
    run = now.calibration
    # calibrated only on shadow labels newer than every label the candidate trained on
    assert run.details["fresh"] and run.details["first_label_ids"][0] > res.cutoff_label_id
    assert store.student(res.student_version_id).metrics["cutoff_label_id"] == res.cutoff_label_id
    vs = lifecycle.versions(store, "news")
    assert [v["live"] for v in vs] == [False, True] and vs[1]["fresh"] and vs[1]["candidate"]
    ev = lifecycle.rollback(store, cfg, "news")
    assert ev.kind == "rolled_back"
    now = lifecycle.live(store, "news")
    assert now.student.version == 1 and now.epoch == 3
    lifecycle.promote(store, cfg, "news", 2)
    assert lifecycle.live(store, "news").student.version == 2


def test_a_candidate_that_cannot_certify_alpha_stays_out(proj: tuple[Config, Store],
                                                         demo: dict[str, list[Any]]) -> None:
    cfg, store = proj
    rng = random.Random(0)
    add(store, [(t, rng.choice(LABELS)) for t, _ in demo["test"][:600]], "shadow")  # the teacher went mad
    res = lifecycle.retrain_task(store, cfg, "news")
    assert not res.passed and not res.promoted and "refused by the gate" in res.message
    assert lifecycle.live(store, "news").student.version == 1
    with pytest.raises(LifecycleError, match="does not certify"):
        lifecycle.promote(store, cfg, "news", res.version)
    assert [e.kind for e in lifecycle.events(store, "news")] == ["gate_failed"]


def test_a_retrain_that_crashes_halfway_leaves_the_live_version(proj: tuple[Config, Store],
                                                                demo: dict[str, list[Any]],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, store = proj
    add(store, demo["test"][:600], "shadow")
    from downsize.students.tfidf import TfidfStudent

    def broken_save(self: Any, directory: Any, **kw: Any) -> None:
        Path(directory).mkdir(parents=True)
        (Path(directory) / "half-written.bin").write_bytes(b"\0" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(TfidfStudent, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        lifecycle.retrain_task(store, cfg, "news")
    now = lifecycle.live(store, "news")
    assert now.student.version == 1 and now.head is None
    with store.session() as s:
        assert s.scalars(select(StudentVersion.version)).all() == [1]
    assert sorted(p.name for p in (cfg.home_dir() / "students" / "news").iterdir()) == ["v1"]


def test_a_version_with_corrupt_files_is_refused(proj: tuple[Config, Store], demo: dict[str, list[Any]]) -> None:
    cfg, store = proj
    add(store, demo["test"][:600], "shadow")
    res = lifecycle.retrain_task(store, cfg, "news", promote_it=False)
    assert res.passed and not res.promoted
    sv = store.student(res.student_version_id)
    blob = next(p for p in student_dir(sv, cfg.home_dir()).iterdir() if p.name != "manifest.json")
    blob.write_bytes(blob.read_bytes()[:-7] + b"garbage")
    with pytest.raises(LifecycleError, match="refused: student v2 .* cannot be loaded.*v1 stays live"):
        lifecycle.promote(store, cfg, "news", 2)
    assert lifecycle.live(store, "news").student.version == 1


def test_two_promotions_at_once_one_wins(proj: tuple[Config, Store], demo: dict[str, list[Any]]) -> None:
    cfg, store = proj
    add(store, demo["test"][:600], "shadow")
    a = lifecycle.retrain_task(store, cfg, "news", promote_it=False)
    b = lifecycle.retrain_task(store, cfg, "news", promote_it=False, seed=1)
    assert a.passed and b.passed and a.version != b.version
    stale = lifecycle.live(store, "news")
    lifecycle.promote(store, cfg, "news", a.version)
    with pytest.raises(LifecycleError, match="changed while"):  # a second writer that read the old state
        lifecycle.change_state(store, "news", "promoted", expect=stale, student_version_id=b.student_version_id,
                               calibration_run_id=b.calibration_run_id, message="late")
    # and for real, from two threads (each its own connection): exactly one of them wins
    barrier, outcomes = threading.Barrier(2), []

    def go(v: int) -> None:
        barrier.wait()
        try:
            lifecycle.promote(store, cfg, "news", v)
            outcomes.append(("ok", v))
        except LifecycleError as exc:
            outcomes.append(("lost", str(exc)))

    ts = [threading.Thread(target=go, args=(v,)) for v in (b.version, 1)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    with store.session() as s:
        chain = s.scalars(select(TaskEvent).where(TaskEvent.parent_id.is_not(None)).order_by(TaskEvent.id)).all()
    parents = [e.parent_id for e in chain]
    assert len(parents) == len(set(parents)), "two state events after the same parent"
    won = [v for k, v in outcomes if k == "ok"]
    assert len(chain) == 1 + len(won) and lifecycle.live(store, "news").student.version == (won[-1] if won else a.version)


def test_order_is_the_store_id_not_the_clock(proj: tuple[Config, Store], demo: dict[str, list[Any]]) -> None:
    cfg, store = proj
    add(store, demo["test"][:600], "shadow")
    with store.session() as s:  # workers with skewed clocks: the newest rows look oldest
        ids = s.scalars(select(Label.id).order_by(Label.id)).all()
        base = datetime(2030, 1, 1)
        for i in ids:
            s.execute(update(Label).where(Label.id == i).values(created_at=base - timedelta(minutes=i)))
    res = lifecycle.retrain_task(store, cfg, "news", promote_it=False)
    run = lifecycle.versions(store, "news")[-1]
    assert run["fresh"]
    with store.session() as s:
        first: dict[int, int] = {}
        for lid, eid in s.execute(select(Label.id, Label.example_id).where(Label.origin == "shadow").order_by(Label.id)):
            first.setdefault(eid, lid)
    ids = sorted(first.values())
    n = round(0.3 * len(ids))  # calibration_fraction of the fresh examples: the newest by id
    assert res.n_calib == n and res.cutoff_label_id == ids[-n] - 1


def test_recalibrate_on_the_recent_window_and_resume_says_what_it_risks(proj: tuple[Config, Store],
                                                                         demo: dict[str, list[Any]]) -> None:
    cfg, store = proj
    now = lifecycle.live(store, "news")
    evidence = {"checks": 100, "disagreements": 30, "mean_loss": 0.3}
    lifecycle.suspend(store, "news", expect=now, message="spot checks: 30 of 100 disagree", evidence=evidence)
    assert lifecycle.live(store, "news").suspended
    add(store, demo["test"][:60], "shadow")
    with pytest.raises(LifecycleError, match="60 fresh shadow labels.*needs 100"):
        lifecycle.retrain_task(store, cfg, "news")
    res = lifecycle.retrain_or_recalibrate(store, cfg, "news")
    assert res.action == "recalibrated" and res.version == 1 and res.n_calib == 60
    if res.passed:
        assert not lifecycle.live(store, "news").suspended
        lifecycle.suspend(store, "news", expect=lifecycle.live(store, "news"), message="again", evidence=evidence)
    ev, risk = lifecycle.resume(store, cfg, "news")
    assert "30.0%" in risk and "Retraining" in risk and ev.kind == "resumed"
    assert not lifecycle.live(store, "news").suspended
    with pytest.raises(LifecycleError, match="not suspended"):
        lifecycle.resume(store, cfg, "news")


def test_watch_counts_teacher_failures_neither_way_and_checkpoints(proj: tuple[Config, Store]) -> None:
    cfg, store = proj
    now = lifecycle.live(store, "news")
    rows = [{"request_id": f"r{i}", "task": "news", "student_version_id": now.student.id, "student_label": "earn",
             "teacher_label": None if i % 3 == 0 else "earn", "agree": None if i % 3 == 0 else True,
             "loss": None if i % 3 == 0 else 0.0} for i in range(90)]
    store.add_spot_checks(rows)
    w = lifecycle.TaskWatch(store, cfg, now, reference=[0.9, 0.8, 0.95])
    rep = w.sync()
    assert rep.risk.n_checks == 60 and rep.risk.loss_sum == 0 and rep.new_checks == 60
    store.add_spot_checks([{**rows[1], "request_id": f"d{i}", "teacher_label": "acq", "agree": False, "loss": 1.0}
                           for i in range(40)])
    rep = lifecycle.TaskWatch(store, cfg, now).sync()  # a new worker: continues from the checkpoint
    assert rep.risk.n_checks == 100 and rep.risk.loss_sum == 40 and rep.risk.rejected
    with store.session() as s:
        losses = [x for x in s.scalars(select(SpotCheck.loss).order_by(SpotCheck.id)) if x is not None]
    from downsize.monitor import RiskMonitor

    assert RiskMonitor.replay(losses, rep.risk.alpha, rep.risk.delta).state == rep.risk


def test_the_cli_verbs(proj: tuple[Config, Store], demo: dict[str, list[Any]], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from downsize.cli import app

    cfg, store = proj
    y = tmp_path / "downsize.yaml"
    y.write_text(f"store: {cfg.store}\nhome: {cfg.home}\nteachers:\n  default:\n    base_url: http://127.0.0.1:9/v1\n"
                 f"    model: m\ntasks:\n  news:\n    instructions: Route the story.\n    labels: "
                 "{" + ", ".join(f"{k}: {k}" for k in LABELS) + "}\n    student: tfidf\n    alpha: 0.1\n"
                 "    retrain_min_labels: 100\n")
    run = CliRunner().invoke
    lifecycle.suspend(store, "news", expect=lifecycle.live(store, "news"), message="7 of 40 spot checks disagreed",
                      evidence={"checks": 40, "disagreements": 7, "mean_loss": 0.175})
    r = run(app, ["status", "-c", str(y)])
    assert r.exit_code == 0 and "SUSPENDED" in r.output and "7 of 40" in r.output, r.output
    r = run(app, ["log", "tail", "-c", str(y)])
    assert r.exit_code == 0 and "suspended" in r.output and "7 of 40" in r.output, r.output
    r = run(app, ["retrain", "news", "--train", "-c", str(y)])
    assert r.exit_code == 1 and "0 fresh shadow labels" in r.output, r.output
    add(store, demo["test"][:600], "shadow")
    r = run(app, ["retrain", "news", "-c", str(y)])
    assert r.exit_code == 0 and "passed the gate" in r.output and "is live" in r.output, r.output
    r = run(app, ["versions", "news", "-c", str(y)])
    assert r.exit_code == 0 and "v2" in r.output and "live" in r.output and "fresh" in r.output, r.output
    r = run(app, ["rollback", "news", "-c", str(y)])
    assert r.exit_code == 0 and "rolled back to v1" in r.output, r.output
    r = run(app, ["resume", "news", "-c", str(y)])
    assert r.exit_code == 1 and "not suspended" in r.output
    r = run(app, ["promote", "news", "9", "-c", str(y)])
    assert r.exit_code == 1 and "no student v9" in r.output
    r = run(app, ["promote", "news", "2", "-c", str(y)])
    assert r.exit_code == 0 and "v2 promoted" in r.output, r.output
    lifecycle.suspend(store, "news", expect=lifecycle.live(store, "news"), message="again", evidence={"mean_loss": 0.2})
    r = run(app, ["resume", "news", "-c", str(y)], input="n\n")
    assert r.exit_code == 1 and lifecycle.live(store, "news").suspended
    r = run(app, ["resume", "news", "--yes", "-c", str(y)])
    assert r.exit_code == 0 and "no new evidence" in r.output and not lifecycle.live(store, "news").suspended


def test_the_report_says_why_a_task_is_suspended(proj: tuple[Config, Store]) -> None:
    from downsize.report import build_report

    cfg, store = proj
    lifecycle.suspend(store, "news", expect=lifecycle.live(store, "news"), message="live risk above alpha=0.1: 9 of 30",
                      evidence={"checks": 30, "disagreements": 9, "statistic": 45.0})
    rep = build_report(store, cfg)
    life = rep["tasks"]["news"]["lifecycle"]
    assert life["state"] == "suspended" and life["suspended"]["evidence"]["disagreements"] == 9
    [step] = [s for s in rep["next_steps"] if s["kind"] == "suspended"]
    assert "9 of 30" in step["detail"] and step["command"] == "downsize retrain news"


def test_retrain_leaves_rare_labels_to_the_teacher(tmp_path: Path, demo: dict[str, list[Any]]) -> None:
    """A label with too few examples in the retrain window does not stop a retrain (as it does not
    stop train): the candidate never answers it, and the gate counts any answer on it as an error."""
    cfg = make_config(tmp_path, retrain_window=400)
    store = Store(cfg.store_url())
    add(store, demo["train"][:1200], None)
    train_task(store, cfg, "news", kind="tfidf")
    calibrate_task(store, cfg, "news")
    common = [(t, y) for t, y in demo["train"][1200:] + demo["test"] if y in ("earn", "acq", "crude")][:700]
    grain = [(t, y) for t, y in demo["test"] if y == "grain"][:3]
    add(store, common[:200] + grain + common[200:], "shadow")
    res = lifecycle.retrain_task(store, cfg, "news", promote_it=False)
    cand = store.student(res.student_version_id)
    from downsize.training import load_student_version

    st = load_student_version(cand, cfg.home_dir())
    assert "grain" not in st.classes_ and cand.n_train < 400 and res.passed, res.message
    store.close()
