"""Labelling against the real replay teacher on loopback: resumable, cached, budgeted, and
consistent after a kill (SIGKILL in a child process) or Ctrl-C."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import func, select

from conftest import R8_LABELS, REUTERS_DEMO
from downsize.config import ClassifyTask, load_config
from downsize.errors import DataError
from downsize.data.labeling import LabelSummary, label_file, label_texts
from downsize.replay import ReplayProcess, ReplayServer
from downsize.store import Example, Label, Store, TeacherCall
from downsize.teacher import AsyncTeacher, Budget, RetryPolicy

FAST = RetryPolicy(max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05)


def _label(store: Store, url: str, task: ClassifyTask, texts: list[str], **kw) -> LabelSummary:  # type: ignore[no-untyped-def]
    teacher_kw = {k: kw.pop(k) for k in list(kw) if k in ("retry", "max_concurrency", "price_per_1m_input",
                                                          "price_per_1m_output", "structured_output")}
    teacher_kw.setdefault("retry", FAST)

    async def go() -> LabelSummary:
        async with AsyncTeacher(url, model="replay", store=store, **teacher_kw) as t:
            return await label_texts(store, t, "news", task, texts, progress=False, **kw)

    return asyncio.run(go())


def _labels(store: Store) -> dict[str, list[str]]:
    """text -> every teacher label recorded for it."""
    with store.session() as s:
        rows = s.execute(select(Example.text, Label.label).join(Label, Label.example_id == Example.id)
                         .where(Label.source == "teacher"))
        out: dict[str, list[str]] = {}
        for text, lab in rows:
            out.setdefault(text, []).append(lab)
        return out


async def _progress(done, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Wait (polling, with a generous deadline) until ``done()``: a run has made progress."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "no progress within the deadline"
        await asyncio.sleep(0.02)


def _assert_consistent(store: Store, labels: set[str]) -> None:
    """Every label points at a recorded ok call that gave exactly that label."""
    with store.session() as s:
        rows = s.execute(select(Label.label, TeacherCall.status, TeacherCall.parsed_label)
                         .join(TeacherCall, Label.teacher_call_id == TeacherCall.id, isouter=True)).all()
    for lab, status, parsed in rows:
        assert lab in labels and status == "ok" and parsed == lab


def test_labels_everything_and_a_rerun_is_free(tmp_store, replay_teacher, reuters_rows, r8_task) -> None:  # type: ignore[no-untyped-def]
    texts, gold = reuters_rows[0][:200], reuters_rows[1][:200]
    s1 = _label(tmp_store, replay_teacher.base_url, r8_task, texts, price_per_1m_input=2.5, price_per_1m_output=10)
    assert (s1.rows, s1.labelled, s1.failed, s1.already_labelled, s1.remaining) == (200, 200, 0, 0, 0)
    assert s1.teacher_calls == 200 == replay_teacher.stats["requests"] and s1.cached_calls == 0
    assert s1.cost_usd > 0 and s1.input_tokens > 0 and s1.output_tokens > 0 and s1.stopped_reason is None
    assert 0 < s1.latency_p50_ms <= s1.latency_p95_ms
    assert s1.cost_usd == pytest.approx(tmp_store.teacher_spend(task="news"))
    assert {t: v for t, v in _labels(tmp_store).items()} == {t: [g] for t, g in zip(texts, gold)}
    _assert_consistent(tmp_store, set(R8_LABELS))

    s2 = _label(tmp_store, replay_teacher.base_url, r8_task, texts + texts[:5])
    assert (s2.rows, s2.duplicates, s2.already_labelled, s2.labelled, s2.teacher_calls) == (200, 5, 200, 0, 0)
    assert replay_teacher.stats["requests"] == 200


def test_calls_recorded_but_not_labelled_come_from_the_cache(tmp_store, replay_teacher, reuters_rows, r8_task) -> None:  # type: ignore[no-untyped-def]
    texts = reuters_rows[0][:60]
    _label(tmp_store, replay_teacher.base_url, r8_task, texts)
    with tmp_store.session() as s:  # as if the run died after the calls, before the labels
        s.execute(Label.__table__.delete())
    s2 = _label(tmp_store, replay_teacher.base_url, r8_task, texts)
    assert (s2.labelled, s2.cached_calls, s2.teacher_calls, s2.cost_usd) == (60, 60, 0, 0.0)
    assert replay_teacher.stats["requests"] == 60
    assert len(_labels(tmp_store)) == 60


def test_parse_failures_are_counted_and_never_labelled(tmp_store, fault_server, r8_task) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"content": "I would say it is about bananas"})
    s = _label(tmp_store, plan.base_url, r8_task, ["one story", "another story", "a third"])
    assert (s.labelled, s.failed, s.parse_errors, s.teacher_errors) == (0, 3, 3, 0)
    assert s.teacher_calls == 6 == plan.count  # each answer plus one repair
    assert s.errors and "not exactly one of the labels" in s.errors[0]
    assert _labels(tmp_store) == {}
    with tmp_store.session() as st:
        assert st.scalar(select(func.count()).select_from(TeacherCall).where(TeacherCall.status == "parse_error")) == 6


def test_teacher_errors_are_counted_and_the_run_goes_on(tmp_store, reuters_rows, reuters_records, r8_task) -> None:  # type: ignore[no-untyped-def]
    texts = reuters_rows[0][:80]
    with ReplayServer(reuters_records, error_rate=0.25, seed=3) as srv:
        s = _label(tmp_store, srv.base_url, r8_task, texts, retry=RetryPolicy(max_retries=0))
        assert s.teacher_errors == s.failed > 0 and s.labelled == 80 - s.failed
        assert "HTTP 500" in s.errors[0]
        assert s.teacher_calls == srv.stats["requests"] == 80
        s2 = _label(tmp_store, srv.base_url, r8_task, texts, retry=FAST)  # retries get the rest
        assert s2.already_labelled == s.labelled and s2.labelled == s.failed and s2.failed == 0
        assert s2.teacher_calls == srv.stats["requests"] - 80 >= s.failed
    _assert_consistent(tmp_store, set(R8_LABELS))


def test_budget_stops_before_exceeding_and_resume_finishes(tmp_store, replay_teacher, reuters_rows, r8_task) -> None:  # type: ignore[no-untyped-def]
    texts = reuters_rows[0][:150]
    prices = {"price_per_1m_input": 500.0, "price_per_1m_output": 500.0}
    full = sum(len(t) for t in texts) / 4 * 500 / 1e6  # ≈ the cost of labelling all of them
    limit = full / 3
    s = _label(tmp_store, replay_teacher.base_url, r8_task, texts, budget=Budget(limit), **prices)
    assert s.stopped_reason == "budget" and 0 < s.labelled < 150 and s.remaining > 0
    assert s.cost_usd <= limit and tmp_store.teacher_spend(task="news") <= limit
    assert replay_teacher.stats["requests"] == s.teacher_calls == s.labelled
    assert "budget" in s.errors[-1]
    _assert_consistent(tmp_store, set(R8_LABELS))

    s2 = _label(tmp_store, replay_teacher.base_url, r8_task, texts, budget=Budget(full * 3), **prices)
    assert s2.stopped_reason is None and s2.already_labelled == s.labelled and s2.labelled == 150 - s.labelled
    assert replay_teacher.stats["requests"] == 150


def test_stop_event_finishes_calls_in_flight(tmp_store, reuters_rows, reuters_records, r8_task) -> None:  # type: ignore[no-untyped-def]
    texts = reuters_rows[0][:100]
    with ReplayServer(reuters_records, latency_ms=50) as srv:

        async def go() -> LabelSummary:
            stop = asyncio.Event()
            async with AsyncTeacher(srv.base_url, model="replay", store=tmp_store, max_concurrency=4) as t:
                task = asyncio.create_task(label_texts(tmp_store, t, "news", r8_task, texts, progress=False, stop=stop))
                await _progress(lambda: srv.stats["requests"] >= 8)  # polled, not a fixed sleep: load varies
                stop.set()
                return await task

        s = asyncio.run(go())
        assert s.stopped_reason == "interrupted" and 0 < s.labelled < 100
        assert s.teacher_calls == srv.stats["requests"] == s.labelled and srv.stats["abandoned"] == 0
    assert len(_labels(tmp_store)) == s.labelled


def test_cancel_leaves_the_store_consistent(tmp_store, reuters_rows, reuters_records, r8_task) -> None:  # type: ignore[no-untyped-def]
    texts = reuters_rows[0][:100]
    with ReplayServer(reuters_records, latency_ms=50) as srv:

        async def go() -> None:
            async with AsyncTeacher(srv.base_url, model="replay", store=tmp_store, max_concurrency=4) as t:
                task = asyncio.create_task(label_texts(tmp_store, t, "news", r8_task, texts, progress=False))
                await _progress(lambda: len(_labels(tmp_store)) >= 1)  # labels written, whatever the load
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

        asyncio.run(go())
        done = len(_labels(tmp_store))
        assert 0 < done < 100
        _assert_consistent(tmp_store, set(R8_LABELS))
        s = _label(tmp_store, srv.base_url, r8_task, texts)
        assert s.already_labelled == done and s.labelled == 100 - done
        # at most the calls in flight at the cancel were paid twice
        assert 100 <= srv.stats["requests"] <= 100 + 4
    assert len(_labels(tmp_store)) == 100


def test_progress_bar_and_render(tmp_store, replay_teacher, reuters_rows, r8_task) -> None:  # type: ignore[no-untyped-def]
    async def go() -> LabelSummary:
        async with AsyncTeacher(replay_teacher.base_url, model="replay", store=tmp_store) as t:
            return await label_texts(tmp_store, t, "news", r8_task, reuters_rows[0][:20], progress=True,
                                     budget=Budget(1.0))

    s = asyncio.run(go())
    console = Console(record=True, width=100)
    console.print(s.render())
    out = console.export_text()
    for needle in ("labelling news: finished", "labelled now", "teacher HTTP calls", "of $1.0000"):
        assert needle in out
    assert s.to_dict()["remaining"] == 0


# ------------------------------------------------------------------------------------
# label_file: the sync wrapper, its data errors, and real processes killed mid-run
# ------------------------------------------------------------------------------------
def _config(tmp_path: Path, base_url: str, *, concurrency: int = 8, text_field: str = "text") -> Path:
    cfg = tmp_path / "downsize.yaml"
    cfg.write_text(
        "store: sqlite:///labels.db\n"
        "teachers:\n  default:\n"
        f"    base_url: {base_url}\n    model: replay\n    max_concurrency: {concurrency}\n"
        "    price_per_1m_input: 2.5\n    price_per_1m_output: 10\n    timeout_s: 10\n"
        "tasks:\n  news:\n    instructions: Route the story.\n"
        f"    text_field: {text_field}\n"
        "    labels: {" + ", ".join(f"{k}: {k}" for k in R8_LABELS) + "}\n"
    )
    return cfg


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_label_file_reads_the_tasks_text_field_and_reports_skipped_rows(tmp_path, replay_teacher, reuters_rows) -> None:  # type: ignore[no-untyped-def]
    texts = reuters_rows[0][:30]
    data = _write_csv(tmp_path / "in.csv", ["id", "body"], [[str(i), t] for i, t in enumerate(texts)] + [["x", ""]])
    config = load_config(_config(tmp_path, replay_teacher.base_url, text_field="body"))
    s = label_file(config, "news", data, progress=False)
    assert (s.rows, s.labelled, s.skipped_rows) == (30, 30, 1)
    assert "in.csv" in s.skipped_note and "empty 'body'" in s.skipped_note
    s2 = label_file(config, "news", data, limit=10, progress=False)
    assert (s2.rows, s2.already_labelled, s2.labelled) == (10, 10, 0)
    with Store(config.store_url()) as st:
        assert len(st.labelled_examples("news")) == 30


def test_label_file_with_a_missing_column_names_the_file_and_column(tmp_path, replay_teacher) -> None:  # type: ignore[no-untyped-def]
    data = _write_csv(tmp_path / "tickets.csv", ["id", "message"], [["1", "hello"]])
    config = load_config(_config(tmp_path, replay_teacher.base_url))
    with pytest.raises(DataError, match=r"tickets\.csv: no column 'text'.*id, message"):
        label_file(config, "news", data, progress=False)
    with pytest.raises(DataError, match=r"tickets\.csv: no column 'body'"):
        label_file(config, "news", data, text_col="body", progress=False)
    assert replay_teacher.stats["requests"] == 0


_CHILD = (
    "import json, sys\n"
    "from downsize.config import load_config\n"
    "from downsize.data.labeling import label_file\n"
    "s = label_file(load_config(sys.argv[1]), 'news', sys.argv[2], progress=False)\n"
    "print(json.dumps(s.to_dict()))\n"
)


def _child(cfg: Path, data: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(cfg), str(data)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cfg.parent)


def _wait_idle(srv: ReplayProcess, timeout: float = 10.0) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while (stats := srv.stats)["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return stats


def test_kill_mid_run_and_resume_pays_for_nothing_twice(tmp_path, reuters_rows) -> None:  # type: ignore[no-untyped-def]
    n, workers, latency_ms = 100, 4, 300
    texts, gold = reuters_rows[0][:n], reuters_rows[1][:n]
    data = _write_csv(tmp_path / "incoming.csv", ["text"], [[t] for t in texts])
    with ReplayProcess(REUTERS_DEMO, latency_ms=latency_ms) as srv:
        cfg = _config(tmp_path, srv.base_url, concurrency=workers)
        child = _child(cfg, data)
        # SIGKILL at ~50 %, at a moment when every worker waits on the server and no answer
        # is due for >= 60 ms: every answer the child received by then was recorded (the gap
        # between the two is under a millisecond), so a resume must pay for nothing twice.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            stats = srv.stats
            if (stats["requests"] >= n // 2 and stats["in_flight"] == workers
                    and stats["oldest_in_flight_ms"] <= latency_ms - 60):
                os.kill(child.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        assert child.wait(timeout=30) == -signal.SIGKILL, "the child finished before it could be killed"
        paid_before = _wait_idle(srv)["requests"]
        assert n // 2 <= paid_before < n

        config = load_config(cfg)
        with Store(config.store_url()) as st:  # consistent after SIGKILL
            _assert_consistent(st, set(R8_LABELS))
            recorded = len(st.labelled_hashes("news"))
            assert recorded <= paid_before

        child = _child(cfg, data)
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        summary = json.loads(out.strip().splitlines()[-1])
        stats = _wait_idle(srv)
        # every row paid for exactly once, but for an answer that arrived unrecorded at the kill: the
        # kill is timed for none, yet a loaded machine can stall this process past the 60 ms margin;
        # such a call is re-sent, and the resume counts it among the claims it took over
        extra = stats["requests"] - n
        assert 0 <= extra <= summary["reclaimed"] <= workers
        assert summary["already_labelled"] == recorded
        assert summary["teacher_calls"] == n - paid_before + extra
        assert summary["cached_calls"] == paid_before - extra - recorded
        assert summary["labelled"] == n - recorded and summary["failed"] == 0

    with Store(config.store_url()) as st:
        labels = _labels(st)
        assert labels == {t: [g] for t, g in zip(texts, gold)}  # every row labelled, once
        _assert_consistent(st, set(R8_LABELS))


def test_ctrl_c_stops_after_the_calls_in_flight(tmp_path, reuters_rows) -> None:  # type: ignore[no-untyped-def]
    n = 120
    texts = reuters_rows[0][:n]
    data = _write_csv(tmp_path / "incoming.csv", ["text"], [[t] for t in texts])
    with ReplayProcess(REUTERS_DEMO, latency_ms=100) as srv:
        cfg = _config(tmp_path, srv.base_url, concurrency=4)
        child = _child(cfg, data)
        deadline = time.monotonic() + 60
        while srv.stats["requests"] < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        assert "stopping after the calls in flight" in err
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["stopped_reason"] == "interrupted" and 20 <= summary["labelled"] < n
        stats = _wait_idle(srv)
        assert stats["abandoned"] == 0 and stats["requests"] == summary["teacher_calls"] == summary["labelled"]
        with Store(load_config(cfg).store_url()) as st:
            assert len(st.labelled_hashes("news")) == summary["labelled"]
            _assert_consistent(st, set(R8_LABELS))
