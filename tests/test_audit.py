"""The audit log: rows with every column, a background writer that never loses a row on a clean
shutdown and survives failing batches, and reading the log back (tail, export, --since)."""

from __future__ import annotations

import csv
import gzip
import json
import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from downsize.audit import (
    LOG_COLUMNS,
    AuditRecord,
    AuditWriter,
    ShadowLabel,
    SpotCheckRecord,
    export_log,
    parse_since,
    read_log,
)
from downsize.errors import DataError
from downsize.store import Label, RequestLog, SpotCheck, Store, text_hash, utcnow


def _row(i: int, **kw: Any) -> AuditRecord:
    fields: dict[str, Any] = {"task": "t", "answer": "a", **{k: v for k, v in kw.items() if v is not None}}
    return AuditRecord(request_id=f"r{i}", model="downsize/t", input_hash=text_hash(str(i)),
                       answered_by="student", latency_ms=1.0, **fields)


def _count(store: Store, table: Any = RequestLog) -> int:
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


def test_audit_record_fills_every_column_and_rejects_unknown_ones() -> None:
    row = _row(1, confidence=0.9).row()
    assert set(row) == set(LOG_COLUMNS) - {"id"}
    assert row["status_code"] == 200 and row["teacher_cost_usd"] == 0.0 and row["confidence"] == 0.9
    long = AuditRecord(model="m", input_hash="h", answered_by="error", latency_ms=0, reason="x" * 400).row()
    assert len(long["reason"]) == 255 and long["request_id"] != row["request_id"]
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        AuditRecord(model="m", input_hash="h", answered_by="error", latency_ms=0, colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="'x' is not a valid AnsweredBy"):
        AuditRecord(model="m", input_hash="h", answered_by="x", latency_ms=0)


def test_close_writes_every_row_submitted(tmp_store: Store) -> None:
    w = AuditWriter(tmp_store, flush_interval_s=0.05, max_batch=700).start()
    for i in range(5000):
        w.submit(_row(i))
    assert w.close(timeout=60)
    assert _count(tmp_store) == 5000
    assert w.stats["written"] == 5000 and w.pending == 0
    assert w.stats["batches"] >= 5000 // 700


def test_flush_makes_rows_visible_without_stopping(tmp_store: Store) -> None:
    with AuditWriter(tmp_store, flush_interval_s=5.0) as w:  # a long interval: only flush() hurries it
        w.submit(_row(1))
        assert w.flush(timeout=10)
        assert _count(tmp_store) == 1
        w.submit(_row(2))
    assert _count(tmp_store) == 2


def test_a_bad_row_is_dropped_and_logged_the_rest_are_written(tmp_store: Store,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="downsize.audit"):
        with AuditWriter(tmp_store, flush_interval_s=0.01, retries=1) as w:
            w.submit(_row(1))
            w.flush(timeout=10)
            for i in range(2, 6):
                w.submit(_row(i))
            w.submit(_row(1))  # duplicate request_id: violates the unique constraint
            for i in range(6, 9):
                w.submit(_row(i))
    assert _count(tmp_store) == 8
    assert w.stats["dropped"] == 1
    assert "request_id=r1" in caplog.text


def test_transient_failures_are_retried(tmp_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_store.log_requests
    calls = {"n": 0}

    def flaky(rows: Any) -> int:
        calls["n"] += 1
        if calls["n"] <= 2:
            raise RuntimeError("database is locked")
        return real(rows)

    monkeypatch.setattr(tmp_store, "log_requests", flaky)
    with AuditWriter(tmp_store, flush_interval_s=0.01, retries=3) as w:
        for i in range(50):
            w.submit(_row(i))
    assert _count(tmp_store) == 50
    assert w.stats["failed_batches"] == 2 and w.stats["dropped"] == 0


def test_rows_are_kept_while_the_store_is_down_and_written_when_it_is_back(
        tmp_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    real_log, real_ping = tmp_store.log_requests, tmp_store.ping
    down = threading.Event()
    down.set()

    def log_requests(rows: Any) -> int:
        if down.is_set():
            raise ConnectionError("store unreachable")
        return real_log(rows)

    def ping() -> None:
        if down.is_set():
            raise ConnectionError("store unreachable")
        real_ping()

    monkeypatch.setattr(tmp_store, "log_requests", log_requests)
    monkeypatch.setattr(tmp_store, "ping", ping)
    w = AuditWriter(tmp_store, flush_interval_s=0.01, retries=0).start()
    for i in range(20):
        w.submit(_row(i))
    assert not w.flush(timeout=1.0)  # cannot finish while down
    assert w.pending == 20 and w.stats["dropped"] == 0
    down.clear()
    assert w.flush(timeout=10)
    assert w.close()
    assert _count(tmp_store) == 20


def test_close_gives_up_after_its_timeout_when_the_store_never_comes_back(
        tmp_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(rows: Any) -> int:
        raise ConnectionError("gone")

    monkeypatch.setattr(tmp_store, "log_requests", broken)
    monkeypatch.setattr(tmp_store, "ping", lambda: broken([]))
    w = AuditWriter(tmp_store, flush_interval_s=0.01, retries=0).start()
    for i in range(3):
        w.submit(_row(i))
    assert w.close(timeout=1.5) is False
    assert w.stats["dropped"] == 3


def test_the_thread_survives_an_unexpected_error(tmp_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    w = AuditWriter(tmp_store, flush_interval_s=0.01)
    real = w._write_until_done
    boom = {"left": 1}

    def once(items: Any) -> None:
        if boom["left"]:
            boom["left"] -= 1
            raise RuntimeError("simulated bug")
        real(items)

    monkeypatch.setattr(w, "_write_until_done", once)
    w.start()
    w.submit(_row(1))  # lost to the simulated bug: logged and counted
    assert w.flush(timeout=10)
    w.submit(_row(2))
    assert w.flush(timeout=10)
    assert w._thread is not None and w._thread.is_alive()
    assert w.close()
    assert _count(tmp_store) == 1 and w.stats["dropped"] == 1 and w.pending == 0


def test_queue_bound_drops_instead_of_growing(tmp_store: Store) -> None:
    w = AuditWriter(tmp_store, max_pending=10)  # not started: nothing drains
    for i in range(15):
        w.submit(_row(i))
    assert w.pending == 10 and w.stats["dropped"] == 5


def test_spot_checks_and_shadow_labels(tmp_store: Store) -> None:
    with AuditWriter(tmp_store, flush_interval_s=0.01) as w:
        w.submit_spot_check(SpotCheckRecord(request_id="r1", task="t", student_label="a", teacher_label="b",
                                            loss=1.0, teacher_cost_usd=0.01))
        w.submit_label(ShadowLabel("t", "some text", "b", None))
        w.submit_label(ShadowLabel("t", "some text", "b", None))  # same text: one example, labels appended
    assert _count(tmp_store, SpotCheck) == 1
    assert _count(tmp_store, Label) == 2
    [ex] = tmp_store.labelled_examples("t")
    assert (ex.text, ex.label, ex.source) == ("some text", "b", "teacher")


# -- reading back ---------------------------------------------------------------------
@pytest.fixture
def logged(tmp_store: Store) -> Store:
    old = utcnow() - timedelta(days=3)
    rows = [_row(i, ts=old if i < 3 else None) for i in range(10)]
    rows += [AuditRecord(request_id="p1", model="gpt-4o", input_hash="h", answered_by="passthrough", latency_ms=5)]
    tmp_store.log_requests([r.row() for r in rows])
    return tmp_store


def test_read_log_last_task_since_and_after(logged: Store) -> None:
    last = read_log(logged, last=4)
    assert [r["request_id"] for r in last] == ["r7", "r8", "r9", "p1"]
    assert len(read_log(logged, task="t")) == 10
    assert len(read_log(logged, since=utcnow() - timedelta(days=1))) == 8
    after = read_log(logged, after_id=last[1]["id"])
    assert [r["request_id"] for r in after] == ["r9", "p1"]


@pytest.mark.parametrize("name", ["log.csv", "log.jsonl", "log.csv.gz", "log.tsv"])
def test_export_every_column(logged: Store, tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    assert export_log(logged, out, task="t", chunk=3) == 10
    opener: Any = gzip.open if name.endswith(".gz") else open
    with opener(out, "rt", encoding="utf-8") as fh:
        if ".jsonl" in name:
            rows = [json.loads(line) for line in fh]
        else:
            rows = list(csv.DictReader(fh, delimiter="\t" if ".tsv" in name else ","))
    assert len(rows) == 10 and list(rows[0]) == list(LOG_COLUMNS)
    assert rows[0]["request_id"] == "r0"
    datetime.fromisoformat(rows[0]["ts"])


def test_export_rejects_unknown_suffix(logged: Store, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown output type .xlsx"):
        export_log(logged, tmp_path / "x.xlsx")


@pytest.mark.parametrize("value,delta", [("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1w", 604800)])
def test_parse_since_spans(value: str, delta: int) -> None:
    now = datetime(2026, 5, 1, 12, 0, 0)
    assert parse_since(value, now=now) == now - timedelta(seconds=delta)


def test_parse_since_dates() -> None:
    assert parse_since("2026-05-01") == datetime(2026, 5, 1)
    assert parse_since("2026-05-01T12:30:00+02:00") == datetime(2026, 5, 1, 10, 30)
    with pytest.raises(DataError, match="'yesterday'"):
        parse_since("yesterday")


# -- the CLI ------------------------------------------------------------------------------
def _cli_project(tmp_path: Path) -> tuple[Path, Store]:
    cfg = tmp_path / "downsize.yaml"
    cfg.write_text("store: sqlite:///d.db\n")
    return cfg, Store(f"sqlite:///{tmp_path / 'd.db'}")


def test_cli_log_tail_and_export(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from downsize.cli import app

    cfg, store = _cli_project(tmp_path)
    with store:
        store.log_requests([_row(i, task="news" if i % 2 else "other", client_key_id="key_1").row() for i in range(30)])
    runner = CliRunner()
    tail = runner.invoke(app, ["log", "tail", "-n", "5", "--task", "news", "--config", str(cfg)],
                         env={"COLUMNS": "200"})
    assert tail.exit_code == 0, tail.output
    assert "last 5 row(s) of news" in tail.stdout and "other" not in tail.stdout and tail.stdout.count("student") == 5
    out = tmp_path / "log.jsonl"
    exp = runner.invoke(app, ["log", "export", str(out), "--since", "1h", "--config", str(cfg)])
    assert exp.exit_code == 0 and "wrote 30 row(s)" in exp.stdout
    assert len(out.read_text().splitlines()) == 30
    bad = runner.invoke(app, ["log", "export", str(tmp_path / "x.csv"), "--since", "soon", "--config", str(cfg)])
    assert bad.exit_code == 2 and "--since 'soon'" in bad.output


def test_cli_log_tail_follow(tmp_path: Path) -> None:
    import os
    import queue
    import subprocess
    import sys
    import time

    cfg, store = _cli_project(tmp_path)
    with store:
        store.log_requests([_row(0).row()])
        proc = subprocess.Popen([sys.executable, "-m", "downsize.cli", "log", "tail", "--follow", "--interval", "0.1",
                                 "--config", str(cfg)], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "COLUMNS": "200"})
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
        seen = ""

        def read_until(needle: str, timeout: float) -> bool:
            nonlocal seen
            deadline = time.monotonic() + timeout
            while needle not in seen and time.monotonic() < deadline:
                try:
                    seen += lines.get(timeout=0.2)
                except queue.Empty:
                    pass
            return needle in seen

        try:
            assert read_until("└", 60), seen  # the initial table is out: following from here
            store.log_requests([_row(1, answer="followed-row").row()])
            assert read_until("followed-row", 30), seen
        finally:
            proc.terminate()
            proc.wait(timeout=10)
