"""Money and failure promises of the batch side (issue 9, items 1-3 and 8): a paid call is claimed
in the store before it is sent, so two processes never pay for one text twice; ``label`` exits
non-zero with a distinct code per failure and stops early when the teacher is unreachable; SIGTERM
is a graceful stop; after ``kill -9`` at most the calls in flight are sent again. Every count is
checked against the replay teacher's own counter, with real processes on one SQLite store."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from conftest import R8_LABELS, REUTERS_DEMO
from downsize.audit.log import export_log
from downsize.cli import app
from downsize.config import load_config
from downsize.data.labeling import label_texts
from downsize.project import Project
from downsize.replay import ReplayProcess, ReplayServer
from downsize.store import Example, Label, Store, TeacherCall
from downsize.teacher import AsyncTeacher, SharedBudget

runner = CliRunner()
SRC = Path(__file__).resolve().parents[1] / "src"


def _config(tmp_path: Path, base_url: str, *, concurrency: int = 4, retries: int = 4, labels: dict | None = None) -> Path:  # type: ignore[type-arg]
    cfg = tmp_path / "downsize.yaml"
    cfg.write_text(
        "store: sqlite:///labels.db\n"
        "teachers:\n  default:\n"
        f"    base_url: {base_url}\n    model: replay\n    max_concurrency: {concurrency}\n"
        f"    price_per_1m_input: 2.5\n    price_per_1m_output: 10\n    timeout_s: 10\n    max_retries: {retries}\n"
        "tasks:\n  news:\n    instructions: Route the story.\n"
        "    labels: {" + ", ".join(f"{k}: {k}" for k in (labels or R8_LABELS)) + "}\n"
    )
    return cfg


def _data(tmp_path: Path, texts: list[str], name: str = "incoming.csv") -> Path:
    path = tmp_path / name
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text"])
        w.writerows([t] for t in texts)
    return path


def _cli(cfg: Path, *args: str) -> subprocess.Popen[str]:
    """``downsize label news <data> -c <cfg>`` as a real process (this tree's code)."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "downsize.cli", "label", "news", *args, "-c", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cfg.parent, env=env)


_CHILD = (
    "import json, sys\n"
    "from downsize.config import load_config\n"
    "from downsize.data.labeling import label_file\n"
    "s = label_file(load_config(sys.argv[1]), 'news', sys.argv[2], progress=False)\n"
    "print(json.dumps(s.to_dict()))\n"
)


def _child_summary(cfg: Path, data: Path) -> dict:  # type: ignore[type-arg]
    out = subprocess.run([sys.executable, "-c", _CHILD, str(cfg), str(data)], capture_output=True, text=True,
                         cwd=cfg.parent, timeout=120, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cost(stdout: str) -> float:
    m = re.search(r"cost\s*\S*\s*\$(\d+\.\d+)", stdout)
    assert m, stdout
    return float(m.group(1))


def _wait_idle(srv, timeout: float = 10.0) -> dict:  # type: ignore[no-untyped-def, type-arg]
    deadline = time.monotonic() + timeout
    while (stats := srv.stats)["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return stats


def _teacher_labels(cfg: Path) -> dict[str, int]:
    """text -> how many teacher labels it has."""
    with Store(load_config(cfg).store_url()) as st, st.session() as s:
        rows = s.execute(select(Example.text, func.count()).join(Label, Label.example_id == Example.id)
                         .where(Label.source == "teacher").group_by(Example.text))
        return dict(rows.all())


# ------------------------------------------------------------------------------------
# item 1: pay once across processes
# ------------------------------------------------------------------------------------
def test_two_label_processes_at_once_pay_for_each_text_once(tmp_path: Path, reuters_rows) -> None:  # type: ignore[no-untyped-def]
    n = 120
    texts = reuters_rows[0][:n]
    data = _data(tmp_path, texts)
    with ReplayServer(dict(zip(*reuters_rows)), latency_ms=40) as srv:
        cfg = _config(tmp_path, srv.base_url)
        procs = [_cli(cfg, str(data)) for _ in range(2)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
        stats = _wait_idle(srv)
        assert stats["requests"] == n and stats["abandoned"] == 0  # each text paid for once, not twice
        with Project.open(cfg) as p:
            spend = next(r["spend_usd"] for r in p.status() if r["task"] == "news")
            with p.store.session() as s:
                assert s.scalar(select(func.count()).select_from(TeacherCall)) == n
        # what the two runs say they paid adds up to the store's spend
        assert sum(_cost(o[0]) for o in outs) == pytest.approx(spend, abs=2e-4)
        # ...and to what the teacher billed: n calls, priced as one run alone pays for them
        one = tmp_path / "alone"
        one.mkdir()
        alone = _child_summary(_config(one, srv.base_url), data)
        assert alone["teacher_calls"] == n and spend == pytest.approx(alone["cost_usd"], rel=1e-9)
    assert _teacher_labels(cfg) == {t: 1 for t in texts}  # one label per text, not one per run


def test_a_shared_budget_counts_what_another_process_spends_meanwhile(tmp_path: Path, reuters_rows, r8_task) -> None:  # type: ignore[no-untyped-def]
    texts = reuters_rows[0][:60]
    with ReplayServer(dict(zip(*reuters_rows))) as srv:
        cfg = _config(tmp_path, srv.base_url)
        store_url = load_config(cfg).store_url()
        with Store(store_url) as st:
            budget = SharedBudget(1.0, st)  # this run begins...
            other = _child_summary(cfg, _data(tmp_path, texts[:30], "other.csv"))  # ...another spends meanwhile
            assert other["labelled"] == 30 and other["cost_usd"] > 0
            budget.limit_usd = other["cost_usd"] * 1.5  # room for about 15 more texts of ours

            async def go():  # type: ignore[no-untyped-def]
                async with AsyncTeacher(srv.base_url, model="replay", store=st, max_concurrency=4,
                                        price_per_1m_input=2.5, price_per_1m_output=10) as t:
                    return await label_texts(st, t, "news", r8_task, texts[30:], progress=False, budget=budget)

            s = asyncio.run(go())
            assert s.stopped_reason == "budget" and 0 < s.labelled < 30
            assert st.spend_since(budget.since_call_id) <= budget.limit_usd  # both runs' spend counted
            assert s.cost_usd <= budget.limit_usd - other["cost_usd"] + 1e-12
            assert srv.stats["requests"] == 30 + s.teacher_calls


def test_a_claim_is_waited_for_and_an_expired_one_taken_over(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'd.db'}") as st:
        h = "a" * 64
        assert st.claim_call(h, owner="x:1:a", lease_s=60) == "claimed"
        assert st.claim_call(h, owner="x:2:b", lease_s=60) == "busy"  # another host's live claim
        assert st.claim_call(h, owner="x:1:a", lease_s=60) == "busy"  # the same owner's call in flight
        assert st.claim_call("b" * 64, owner="x:2:b", lease_s=-1) == "claimed"
        assert st.claim_call("b" * 64, owner="x:1:a", lease_s=60) == "reclaimed"  # its lease ran out
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        me = f"{socket.gethostname()}:{dead.pid}:t"
        assert st.claim_call("c" * 64, owner=me, lease_s=600) == "claimed"
        assert st.claim_call("c" * 64, owner="x:1:a", lease_s=60) == "reclaimed"  # its process is gone
        st.record_call(TeacherCall(request_hash=h, base_url="u", model="m", prompt=[], status="ok"), owner="x:1:a")
        assert st.claim_call(h, owner="x:2:b", lease_s=60) == "recorded"
        assert {c.request_hash for c in st.open_claims()} == {"b" * 64, "c" * 64}


def test_a_call_recorded_between_the_claims_reads_is_not_sent_again(tmp_path: Path) -> None:
    """Process A records its call and drops its claim just after B looked for the record and just
    before B looked for a claim: B must answer from A's record, not claim and pay again."""
    from sqlalchemy import event

    url = f"sqlite:///{tmp_path / 'd.db'}"
    h = "d" * 64
    with Store(url) as a, Store(url) as b:
        assert a.claim_call(h, owner="x:1:a", lease_s=60) == "claimed"
        fired = []

        @event.listens_for(b.engine, "before_cursor_execute")
        def a_finishes(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
            if not fired and "FROM teacher_call_claims" in statement and statement.lstrip().startswith("SELECT"):
                fired.append(True)
                a.record_call(TeacherCall(request_hash=h, base_url="u", model="m", prompt=[], status="ok"),
                              owner="x:1:a")

        assert b.claim_call(h, owner="x:2:b", lease_s=60) == "recorded"
        assert fired and a.open_claims() == []


def test_a_label_another_run_wrote_meanwhile_is_not_written_again(tmp_path: Path) -> None:
    """Two runs answered one text (one paid, one read the record): the second flush adds nothing."""
    with Store(f"sqlite:///{tmp_path / 'd.db'}") as a, Store(f"sqlite:///{tmp_path / 'd.db'}") as b:
        eid, other = a.add_examples("news", ["one text", "another"], source="t")
        assert a.add_labels("news", [(eid, "earn")], source="teacher", unless_labelled=True) == 1
        assert b.add_labels("news", [(eid, "earn"), (other, "acq")], source="teacher", unless_labelled=True) == 1
        assert b.add_labels("news", [(eid, "gold")], source="gold", unless_labelled=True) == 1  # per source
        assert sorted((x.example_id, x.source) for x in b.labelled_examples("news")) == [(eid, "gold"), (other, "teacher")]


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
        with socket.create_connection((srv.host, srv.port)) as s:  # gone while the answer is "thought"
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(body) + body)
            deadline = time.monotonic() + 5
            while srv.stats["in_flight"] < 1 and time.monotonic() < deadline:
                time.sleep(0.01)
        deadline = time.monotonic() + 10
        while srv.stats["abandoned"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.stats["abandoned"] == 2 and srv.stats["requests"] == 0
    noisy = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage() or r.levelno >= logging.ERROR]
    assert not noisy, [r.getMessage() for r in noisy]


# ------------------------------------------------------------------------------------
# item 2: exit codes and the circuit breaker
# ------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _label_cli(cfg: Path, data: Path, *extra: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["label", "news", str(data), "--config", str(cfg), *extra])


def test_label_help_documents_the_exit_codes() -> None:
    out = runner.invoke(app, ["label", "--help"], terminal_width=200).output
    for needle in ("Exit codes", "some rows failed", "unreachable", "--budget", "143", "130", "--keep-going"):
        assert needle in out, needle


def test_a_closed_port_stops_the_run_early_with_exit_3(tmp_path: Path, reuters_rows) -> None:  # type: ignore[no-untyped-def]
    data = _data(tmp_path, reuters_rows[0][:40])
    cfg = _config(tmp_path, f"http://127.0.0.1:{_free_port()}/v1", concurrency=4)  # nothing listens there
    r = _label_cli(cfg, data)
    assert r.exit_code == 3, r.output
    assert "teacher calls in a row failed" in r.output and "--keep-going" in r.output
    assert "not attempted" in r.output  # it stopped: 8 failures in a row, plus the calls in flight
    failed = int(re.search(r"failed\s*\S*\s*(\d+) \(", r.output).group(1))  # type: ignore[union-attr]
    assert 8 <= failed <= 8 + 4


def test_keep_going_labels_on_and_a_run_that_got_nothing_through_still_exits_3(tmp_path: Path, reuters_rows) -> None:  # type: ignore[no-untyped-def]
    data = _data(tmp_path, reuters_rows[0][:12])
    cfg = _config(tmp_path, f"http://127.0.0.1:{_free_port()}/v1", concurrency=4, retries=0)
    r = _label_cli(cfg, data, "--keep-going")
    assert r.exit_code == 3, r.output
    assert "not attempted" not in r.output and re.search(r"failed\s*\S*\s*12 \(0 parse, 12 teacher\)", r.output)


def test_answers_that_never_fit_the_task_stop_the_run_with_exit_6(tmp_path: Path, reuters_rows) -> None:  # type: ignore[no-untyped-def]
    texts = reuters_rows[0][:40]
    with ReplayServer({t: "bananas" for t in texts}) as srv:  # a label the task does not have
        cfg = _config(tmp_path, srv.base_url)
        r = _label_cli(cfg, _data(tmp_path, texts))
        assert r.exit_code == 6, r.output
        assert "none of the first 10 answers fit the task" in r.output and "not attempted" in r.output
        assert srv.stats["requests"] <= 2 * (10 + 4)  # each answer and its repair, then it stopped
        r = _label_cli(cfg, _data(tmp_path, texts), "--keep-going")
        assert r.exit_code == 5 and "not attempted" not in r.output, r.output


def test_some_rows_failed_exits_5_and_a_budget_stop_exits_4(tmp_path: Path, reuters_rows) -> None:  # type: ignore[no-untyped-def]
    texts, gold = reuters_rows[0][:30], reuters_rows[1][:30]
    records = {t: ("bananas" if i % 3 == 0 else g) for i, (t, g) in enumerate(zip(texts, gold))}
    with ReplayServer(records) as srv:
        cfg = _config(tmp_path, srv.base_url)
        r = _label_cli(cfg, _data(tmp_path, texts[:15]))
        assert r.exit_code == 5, r.output
        assert "5 row(s) failed" in r.output
        r = _label_cli(cfg, _data(tmp_path, texts[15:], "more.csv"), "--budget", "0.0005")
        assert r.exit_code == 4, r.output
        assert "budget reached" in r.output


# ------------------------------------------------------------------------------------
# item 3: SIGTERM is a graceful stop; kill -9 repeats at most the calls in flight
# ------------------------------------------------------------------------------------
def _wait_for(srv, n: int, child: subprocess.Popen[str], timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while srv.stats["requests"] < n and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert child.poll() is None, "the child finished before the signal"


def test_sigterm_stops_after_the_calls_in_flight_prints_the_summary_and_exits_143(tmp_path: Path, reuters_rows) -> None:  # type: ignore[no-untyped-def]
    n, workers = 120, 4
    texts = reuters_rows[0][:n]
    data = _data(tmp_path, texts)
    with ReplayServer(dict(zip(*reuters_rows)), latency_ms=100) as srv:
        cfg = _config(tmp_path, srv.base_url, concurrency=workers)
        child = _cli(cfg, str(data))
        _wait_for(srv, 20, child)
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
        assert child.returncode == 143, err
        assert "labelling news: stopped: terminated" in out and "labelled now" in out  # the summary
        assert "SIGTERM: stopping after the calls in flight" in err
        first = _wait_idle(srv)
        assert first["abandoned"] == 0  # the calls in flight finished (and were recorded)
        labelled = int(re.search(r"labelled now\s*\S*\s*(\d+)", out).group(1))  # type: ignore[union-attr]
        assert first["requests"] == labelled and 20 <= labelled < n
        child = _cli(cfg, str(data))  # the restart pays for the rest only
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert _wait_idle(srv)["requests"] == n  # exactly: nothing paid twice
    assert _teacher_labels(cfg) == {t: 1 for t in texts}


def test_after_kill_9_at_most_the_calls_in_flight_are_sent_again_and_counted(tmp_path: Path, reuters_rows) -> None:  # type: ignore[no-untyped-def]
    n, workers = 100, 4
    texts = reuters_rows[0][:n]
    data = _data(tmp_path, texts)
    with ReplayServer(dict(zip(*reuters_rows)), latency_ms=150) as srv:
        cfg = _config(tmp_path, srv.base_url, concurrency=workers)
        child = _cli(cfg, str(data))
        _wait_for(srv, n // 3, child)
        os.kill(child.pid, signal.SIGKILL)  # at whatever moment: calls in flight, answers unrecorded
        child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        before = _wait_idle(srv)
        with Store(load_config(cfg).store_url()) as st:
            orphaned = len(st.open_claims())
            assert 0 < orphaned <= workers  # the claims of the calls that were in flight
        summary = _child_summary(cfg, data)
        after = _wait_idle(srv)
        sent = after["requests"] + after["abandoned"]  # every request that reached the teacher
        repeated = sent - n
        assert 0 <= repeated <= summary["reclaimed"] <= workers  # the bound: the teacher's max_concurrency
        assert after["requests"] - n <= workers
        assert summary["reclaimed"] == orphaned and summary["failed"] == 0
        assert before["requests"] + before["abandoned"] + summary["teacher_calls"] == sent
        with Store(load_config(cfg).store_url()) as st:
            assert st.open_claims() == []
    assert _teacher_labels(cfg) == {t: 1 for t in texts}
