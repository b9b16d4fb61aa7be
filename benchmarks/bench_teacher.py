"""Labelling throughput: ``label_texts`` against the replay teacher in a separate process.

Run 1 labels every row of the Reuters R8 training file (5,485 rows, from ../shared/data, or
the bundled 2,400-row demo file when that is absent) through real HTTP on loopback with 0 ms
teacher latency, recording every call in a fresh SQLite store. Run 2 labels the same texts
for a second task with the same prompt: every answer comes from the content-addressed cache,
and the replay server's counter shows that no HTTP call was made.

    python benchmarks/bench_teacher.py [--data FILE] [--concurrency 8] [--limit N] [--json OUT]

Writes benchmarks/results/teacher.json. Target: >= 300 labelled rows/s on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import sys
import tempfile
from pathlib import Path

from downsize.config import ClassifyTask
from downsize.data import read_texts
from downsize.data.labeling import LabelSummary, label_texts
from downsize.replay import ReplayProcess
from downsize.store import Store
from downsize.teacher import AsyncTeacher

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data" / "reuters_r8-train.csv.gz"
BUNDLED = HERE.parent / "src" / "downsize" / "_assets" / "reuters_r8_demo-train.csv.gz"
TARGET_ROWS_PER_S = 300.0


def _cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) used so far by this process, or by child ``pid`` (Linux)."""
    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _run(store: Store, base_url: str, task_name: str, task: ClassifyTask, texts: list[str],
               concurrency: int, progress: bool) -> LabelSummary:
    async with AsyncTeacher(base_url, model="replay-gpt-4o", store=store, max_concurrency=concurrency,
                            price_per_1m_input=2.5, price_per_1m_output=10.0) as teacher:
        return await label_texts(store, teacher, task_name, task, texts, progress=progress)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED if SHARED.exists() else BUNDLED)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--progress", action="store_true", help="show the progress bar (costs a little)")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "teacher.json", help="where to write the figures")
    args = ap.parse_args(argv)

    data = read_texts(args.data, label_col="label", limit=args.limit)
    labels = sorted(set(data.labels or []))
    task = ClassifyTask(instructions="Route the newswire story to its topic.", labels={x: x for x in labels})
    print(f"data: {args.data} ({len(data):,} rows, {len(set(data.texts)):,} distinct, {len(labels)} labels)")
    print(f"machine: Python {platform.python_version()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}; concurrency {args.concurrency}; replay teacher in a separate process, 0 ms latency")

    with tempfile.TemporaryDirectory() as tmp, ReplayProcess(args.data, latency_ms=0) as srv:
        store = Store(f"sqlite:///{tmp}/bench.db")
        assert srv.proc is not None
        cpu0, srv0 = _cpu_s(), _cpu_s(srv.proc.pid)
        s1 = asyncio.run(_run(store, srv.base_url, "r8", task, data.texts, args.concurrency, args.progress))
        cpu_client = (_cpu_s() - cpu0) / s1.labelled * 1000
        cpu_server = (_cpu_s(srv.proc.pid) - srv0) / s1.labelled * 1000
        http1 = srv.stats["requests"]
        print(f"run 1 (teacher):  {s1.labelled:,} labelled, {s1.failed} failed in {s1.elapsed_s:.2f} s "
              f"= {s1.labelled / s1.elapsed_s:,.0f} rows/s; {http1:,} HTTP calls; ${s1.cost_usd:.4f}; "
              f"latency p50 {s1.latency_p50_ms:.1f} ms, p95 {s1.latency_p95_ms:.1f} ms")
        print(f"                  CPU per row: client {cpu_client:.2f} ms, replay server {cpu_server:.2f} ms "
              f"(the client alone could do ~{1000 / cpu_client:,.0f} rows/s on a free core)")
        s2 = asyncio.run(_run(store, srv.base_url, "r8-again", task, data.texts, args.concurrency, args.progress))
        http2 = srv.stats["requests"] - http1
        print(f"run 2 (cache):    {s2.labelled:,} labelled in {s2.elapsed_s:.2f} s "
              f"= {s2.labelled / s2.elapsed_s:,.0f} rows/s; {http2} HTTP calls; {s2.cached_calls:,} cached; "
              f"${s2.cost_usd:.4f}")
        store.close()

    rate = s1.labelled / s1.elapsed_s
    ok = rate >= TARGET_ROWS_PER_S and http2 == 0 and s1.failed == 0
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "data": str(args.data), "rows": len(data), "distinct": s1.rows, "concurrency": args.concurrency,
        "cores": os.cpu_count(), "load_avg_1m": os.getloadavg()[0],
        "teacher_run": {"rows_per_s": rate, "elapsed_s": s1.elapsed_s, "http_calls": http1,
                        "cost_usd": s1.cost_usd, "latency_p50_ms": s1.latency_p50_ms,
                        "latency_p95_ms": s1.latency_p95_ms, "failed": s1.failed,
                        "cpu_ms_per_row_client": cpu_client, "cpu_ms_per_row_server": cpu_server},
        "cached_run": {"rows_per_s": s2.labelled / s2.elapsed_s, "elapsed_s": s2.elapsed_s, "http_calls": http2,
                       "cached_calls": s2.cached_calls},
        "target_rows_per_s": TARGET_ROWS_PER_S, "pass": ok,
    }, indent=2) + "\n")
    print(f"{'PASS' if ok else 'FAIL'}: {rate:,.0f} rows/s (target >= {TARGET_ROWS_PER_S:.0f}), "
          f"{http2} HTTP calls on the cached run (expected 0)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
