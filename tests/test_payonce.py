"""Money and failure promises of the batch side (issue 9, items 1-3 and 8): a paid call is claimed
in the store before it is sent, so two processes never pay for one text twice; ``label`` exits
non-zero with a distinct code per failure and stops early when the teacher is unreachable; SIGTERM
is a graceful stop; after ``kill -9`` at most the calls in flight are sent again. Every count is
checked against the replay teacher's own counter, with real processes on one SQLite store."""

from __future__ import annotations

import csv
import io
import logging
import os
import stat
from pathlib import Path

import httpx

from downsize.audit.log import export_log
from downsize.replay import ReplayServer
from downsize.store import Store


# ------------------------------------------------------------------------------------
# item 8: NUL-safe CSV export, a private store file, a quiet replay teacher
# ------------------------------------------------------------------------------------
def test_store_file_is_created_readable_by_its_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with Store(f"sqlite:///{tmp_path / 'sub' / 'downsize.db'}") as st:
            st.log_requests([_log_row("a", "hello")])
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "sub").iterdir()}
    finally:
        os.umask(old)
    assert modes["downsize.db"] == 0o600
    assert all(m == 0o600 for m in modes.values()), modes  # the -wal and -shm files too


def _log_row(rid: str, text: str) -> dict:  # type: ignore[type-arg]
    return {"request_id": rid, "model": "m", "input_hash": "h" * 64, "input_text": text, "answer": "x",
            "answered_by": "student", "latency_ms": 1.0, "task": "news"}


def test_csv_export_drops_nul_characters_and_jsonl_keeps_them(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'downsize.db'}") as st:
        st.log_requests([_log_row("a", "bad\x00byte"), _log_row("b", "fine")])
        for suffix in (".csv", ".tsv"):
            out = tmp_path / f"log{suffix}"
            assert export_log(st, out) == 2
            raw = out.read_bytes()
            assert b"\x00" not in raw
            rows = list(csv.DictReader(io.StringIO(raw.decode()), delimiter="\t" if suffix == ".tsv" else ","))
            assert [r["input_text"] for r in rows] == ["badbyte", "fine"]
        export_log(st, tmp_path / "log.jsonl")
        assert "bad\\u0000byte" in (tmp_path / "log.jsonl").read_text()


def test_replay_teacher_is_quiet_when_a_client_goes_away(caplog) -> None:  # type: ignore[no-untyped-def]
    import socket
    import time

    body = b'{"model": "replay", "messages": [{"role": "user", "content": "hello"}]}'
    with caplog.at_level(logging.DEBUG), ReplayServer({"hello": "greeting"}, latency_ms=200) as srv:
        with socket.create_connection((srv.host, srv.port)) as s:  # half a body, then gone
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
            time.sleep(0.1)
        try:  # gone while the answer is being "thought"
            httpx.post(srv.base_url + "/chat/completions", content=body, timeout=0.05)
        except httpx.TimeoutException:
            pass
        deadline = time.monotonic() + 5
        while srv.stats["abandoned"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.stats["abandoned"] == 2 and srv.stats["requests"] == 0
    noisy = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage() or r.levelno >= logging.ERROR]
    assert not noisy, [r.getMessage() for r in noisy]
