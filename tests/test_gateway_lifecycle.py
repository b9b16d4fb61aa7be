"""The gateway's lifecycle loop against the replay teacher on loopback: monitors fed by spot checks,
automatic suspension, auto-retrain through the gate, hot reload, refused corrupt versions."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from downsize import lifecycle
from downsize.config import Config
from downsize.data import read_texts
from downsize.replay import ReplayServer
from downsize.server import ServerThread, create_app
from downsize.store import MonitorCheckpoint, RequestLog, SpotCheck, Store, TaskEvent
from downsize.training import calibrate_task, student_dir, train_task

ASSETS = Path(__file__).resolve().parents[1] / "src" / "downsize" / "_assets"
LABELS = ["earn", "acq", "crude", "trade", "money-fx", "interest", "ship", "grain"]
MODEL = "downsize/news"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A store with a calibrated tfidf student trained on 1,200 demo rows (labels as the teacher's)."""
    tr = read_texts(ASSETS / "reuters_r8_demo-train.csv.gz", label_col="label")
    te = read_texts(ASSETS / "reuters_r8_demo-test.csv.gz", label_col="label")
    rows = list(zip(tr.texts, tr.labels or [])) + list(zip(te.texts, te.labels or []))
    d = tmp_path_factory.mktemp("lifecycle-base")
    cfg = config(d, "http://127.0.0.1:9/v1")
    with Store(cfg.store_url()) as st:
        train = rows[:1200]
        ids = st.add_examples("news", [t for t, _ in train], source="file")
        st.add_labels("news", list(zip(ids, [y for _, y in train])), source="teacher")
        train_task(st, cfg, "news", kind="tfidf")
        run, _ = calibrate_task(st, cfg, "news")
    assert run.threshold is not None
    seen = {t for t, _ in train}
    fresh = [(t, y) for t, y in dict(rows).items() if t not in seen]
    return {"dir": d, "records": dict(rows), "fresh": fresh}


def config(d: Path, url: str, **task: Any) -> Config:
    return Config.model_validate({
        "store": f"sqlite:///{d / 'd.db'}", "home": str(d / ".downsize"),
        "teachers": {"default": {"base_url": url, "model": "replay", "max_concurrency": 32, "timeout_s": 5,
                                 "max_retries": 0}},
        "tasks": {"news": {"instructions": "Route the story.", "labels": {k: k for k in LABELS}, "student": "tfidf",
                           "alpha": 0.1, "delta": 0.1, "spot_check_rate": 1.0, **task}},
        "server": {"rate_limit_per_minute": 1_000_000, "lifecycle_interval_s": 0.2},
    })


def project(base: dict[str, Any], tmp_path: Path, url: str, **task: Any) -> Config:
    shutil.copyfile(base["dir"] / "d.db", tmp_path / "d.db")
    shutil.copytree(base["dir"] / ".downsize", tmp_path / ".downsize")
    return config(tmp_path, url, **task)


def ask(c: httpx.Client, text: str) -> httpx.Response:
    r = c.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text
    return r


def send(c: httpx.Client, texts: list[str], workers: int = 8) -> list[httpx.Response]:
    out: list[Any] = [None] * len(texts)

    def go(i0: int) -> None:
        for i in range(i0, len(texts), workers):
            out[i] = ask(c, texts[i])

    ts = [threading.Thread(target=go, args=(i,)) for i in range(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def wait_for(pred: Any, what: str, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def replay(base: dict[str, Any]) -> Iterator[ReplayServer]:
    with ReplayServer(base["records"]) as srv:
        yield srv


def test_suspends_retrains_gates_and_resumes_by_itself(base: dict[str, Any], replay: ReplayServer,
                                                       tmp_path: Path) -> None:
    cfg = project(base, tmp_path, replay.base_url, retrain="auto", retrain_min_labels=150, retrain_window=120)
    fresh = [(t, y) for t, y in base["fresh"] if y in ("earn", "acq", "crude")]
    calm, drift, after = fresh[:120], fresh[120:720], fresh[720:900]
    with Store(cfg.store_url()) as st, ServerThread(create_app(cfg, store=st, auth=False)) as srv:
        gw = srv.app.state.gateway
        rt = gw.tasks["news"]
        c = httpx.Client(base_url=srv.url, timeout=30)
        send(c, [t for t, _ in calm])
        gw.writer.flush()
        gw.lifecycle.tick()
        assert rt.mode == "cascade", rt.lifecycle
        # the teacher changes its mind: from now on it files takeovers under earnings
        for t, y in drift + after:
            if y == "acq":
                replay.app.state.records[t] = "earn"
        served: list[tuple[str, str, str]] = []
        for i in range(0, len(drift), 20):
            part = drift[i:i + 20]
            for r, (t, _) in zip(send(c, [t for t, _ in part]), part):
                served.append((r.headers["x-downsize-answered-by"], r.json()["choices"][0]["message"]["content"],
                               replay.app.state.records[t]))
            if rt.mode == "suspended" and len(served) > 40 and rt.cascade.student_version_id != 1:
                break
            gw.writer.flush()
        # it was suspended, with the evidence, and every request then went to the teacher
        with st.session() as s:
            evs = s.scalars(select(TaskEvent).where(TaskEvent.task == "news").order_by(TaskEvent.id)).all()
        kinds = [e.kind for e in evs]
        assert "suspended" in kinds, kinds
        sus = evs[kinds.index("suspended")]
        ev = sus.details["evidence"]
        assert ev["checks"] > 0 and ev["disagreements"] / ev["checks"] > 0.1 and ev["statistic"] >= ev["threshold"]
        assert "spot checks disagreed" in sus.message
        first_shadow = next(i for i, (by, _, _) in enumerate(served) if by == "shadow")
        assert {by for by, _, _ in served} <= {"shadow", "student", "teacher"}
        # suspended: the teacher answers everything until a version passes the gate (150 labels later)
        assert all(by == "shadow" for by, _, _ in served[first_shadow + 20:first_shadow + 140])
        # then a retrained candidate passed the gate on fresh labels and went live by itself
        wait_for(lambda: (gw.lifecycle.tick(), rt.mode == "cascade" and rt.cascade.student_version_id != 1)[1],
                 "the retrained version to go live", timeout=120)
        with st.session() as s:
            kinds = [e.kind for e in s.scalars(select(TaskEvent).order_by(TaskEvent.id))]
        assert kinds[kinds.index("suspended"):][:1] == ["suspended"] and "promoted" in kinds, kinds
        now = lifecycle.live(st, "news")
        assert now.calibration.details["fresh"] and not now.suspended and now.epoch == 2
        res = send(c, [t for t, _ in after])
        student = [(r.json()["choices"][0]["message"]["content"], replay.app.state.records[t])
                   for r, (t, _) in zip(res, after) if r.headers["x-downsize-answered-by"] == "student"]
        assert len(student) > 50
        wrong = sum(a != b for a, b in student) / len(student)
        assert wrong <= 0.1, wrong
        before = [(a, b) for by, a, b in served[:first_shadow] if by == "student"]
        assert sum(a != b for a, b in before) / len(before) > wrong
        h = c.get("/healthz").json()["tasks"]["news"]
        assert h["state"] == "live" and h["monitor"]["risk"] is not None
        m = c.get("/metrics").text
        assert 'downsize_task_suspended{task="news"} 0.0' in m


def test_suspended_and_teacher_down_is_student_fallback_marked_suspended(base: dict[str, Any],
                                                                           tmp_path: Path) -> None:
    cfg = project(base, tmp_path, "http://127.0.0.1:9/v1")
    with Store(cfg.store_url()) as st:
        lifecycle.suspend(st, "news", expect=lifecycle.live(st, "news"), message="test: 9 of 20 disagreed",
                          evidence={"checks": 20, "disagreements": 9})
        with ServerThread(create_app(cfg, store=st, auth=False)) as srv:
            c = httpx.Client(base_url=srv.url, timeout=30)
            r = ask(c, base["fresh"][0][0])
            assert r.headers["x-downsize-answered-by"] == "student_fallback"
            assert "suspended" in r.json()["downsize"]["reason"]
            h = c.get("/healthz").json()["tasks"]["news"]
            assert h["mode"] == "suspended" and "9 of 20" in h["reason"]
            body = c.get("/healthz").json()
            assert body["status"] == "degraded" and any("suspended" in r for r in body["reasons"])
            assert 'downsize_task_suspended{task="news"} 1.0' in c.get("/metrics").text


def test_spot_check_teacher_errors_count_neither_way_and_state_survives_a_restart(base: dict[str, Any],
                                                                                  tmp_path: Path) -> None:
    with ReplayServer(base["records"], error_rate=0.5, seed=3) as teacher:
        cfg = project(base, tmp_path, teacher.base_url)
        texts = [t for t, _ in base["fresh"][:150]]
        with Store(cfg.store_url()) as st:
            with ServerThread(create_app(cfg, store=st, auth=False)) as srv:
                c = httpx.Client(base_url=srv.url, timeout=30)
                for t in texts:
                    c.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": t}]})
                gw = srv.app.state.gateway
                wait_for(lambda: gw.spot_checks._in_flight.get("default", 0) == 0, "spot checks")
                gw.writer.flush()
                gw.lifecycle.tick()
                risk = gw.tasks["news"].lifecycle["monitor"]["risk"]
            with st.session() as s:
                checks = s.scalars(select(SpotCheck)).all()
                cp = s.scalar(select(MonitorCheckpoint).where(MonitorCheckpoint.monitor == "risk"))
            failed = [ch for ch in checks if ch.loss is None]
            ok = [ch for ch in checks if ch.loss is not None]
            assert failed and ok
            assert risk["checks"] == len(ok) and risk["disagreements"] == sum(ch.loss for ch in ok)
            assert cp.last_id == max(ch.id for ch in checks) and cp.state["n_checks"] == len(ok)
            # a restart continues from the checkpoint (a check fed twice would show here)
            with ServerThread(create_app(cfg, store=st, auth=False)) as srv:
                gw = srv.app.state.gateway
                gw.lifecycle.tick()
                assert gw.tasks["news"].lifecycle["monitor"]["risk"]["checks"] == len(ok)


def test_hot_reload_in_every_worker_and_a_corrupt_version_is_refused(base: dict[str, Any], replay: ReplayServer,
                                                                     tmp_path: Path) -> None:
    cfg = project(base, tmp_path, replay.base_url, spot_check_rate=0.0)
    with Store(cfg.store_url()) as st:
        ids = st.add_examples("news", [t for t, _ in base["fresh"][:400]], source="test")
        st.add_labels("news", list(zip(ids, [y for _, y in base["fresh"][:400]])), source="teacher", origin="shadow")
        res = lifecycle.retrain_task(st, cfg, "news", promote_it=False)
        assert res.passed
        bad = lifecycle.retrain_task(st, cfg, "news", promote_it=False, seed=2)
        apps = [create_app(cfg, store=st, auth=False) for _ in range(2)]  # two workers on one store
        with ServerThread(apps[0]) as s1, ServerThread(apps[1]) as s2:
            clients = [httpx.Client(base_url=s.url, timeout=30) for s in (s1, s2)]
            stop, errors, n = threading.Event(), [], [0]

            def traffic(c: httpx.Client) -> None:
                i = 0
                while not stop.is_set():
                    r = c.post("/v1/chat/completions", json={"model": MODEL, "messages": [
                        {"role": "user", "content": base["fresh"][500 + i % 300][0]}]})
                    n[0] += 1
                    if r.status_code != 200:
                        errors.append(r.text)
                    i += 1

            ts = [threading.Thread(target=traffic, args=(c,)) for c in clients for _ in range(3)]
            for t in ts:
                t.start()
            wait_for(lambda: n[0] >= 10, "traffic to flow")
            lifecycle.promote(st, cfg, "news", res.version, actor="cli")
            rts = [a.state.gateway.tasks["news"] for a in apps]
            wait_for(lambda: all(rt.cascade.student_version_id == res.student_version_id for rt in rts), "reload")
            # a version whose files were damaged after it passed the gate: refused, the old one serves on
            sv = st.student(bad.student_version_id)
            (student_dir(sv, cfg.home_dir()) / "manifest.json").write_text("{}")
            with pytest.raises(Exception, match="refused"):
                lifecycle.promote(st, cfg, "news", bad.version)
            now = lifecycle.live(st, "news")
            lifecycle.change_state(st, "news", "promoted", expect=now, student_version_id=bad.student_version_id,
                                   calibration_run_id=bad.calibration_run_id, message="forced past the check")
            wait_for(lambda: all(rt.lifecycle.get("refused") for rt in rts), "the refusal")
            time.sleep(0.3)
            stop.set()
            for t in ts:
                t.join()
        assert not errors and n[0] >= 10, (errors[:3], n)
        assert all(rt.cascade.student_version_id == res.student_version_id for rt in rts)
        with st.session() as s:
            refused = s.scalars(select(TaskEvent).where(TaskEvent.kind == "refused")).all()
            served = set(s.scalars(select(RequestLog.student_version_id)).all())
        assert len(refused) == 1 and bad.student_version_id not in served
