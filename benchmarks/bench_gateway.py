"""Gateway benchmark (issue: the gateway): throughput, latency and cost of ``downsize serve``.

Builds a calibrated Reuters R8 task (tfidf student; the teacher is a replay of the recorded
labels in its own process), starts ``downsize serve`` as a real server process, and drives it
over loopback with a small keep-alive HTTP/1.1 load generator (asyncio, one connection per
concurrent client, per-request latency measured on the client):

1. **student path**: ``--requests`` chat completions of texts the student answers (at
   ``--concurrency``): requests/s and p50/p95/p99 latency;
2. **overhead**: the same path one request at a time (and at concurrency 8), against the
   student's own p99 for one text (``predict_proba`` called directly): gateway p99 − student p99;
3. **cascade on real traffic**: the held-out test texts (confident or not), escalations to
   the replay teacher at ``--teacher-latency-ms``;
4. **teacher-only**: the same texts passed through the gateway to the teacher;
5. **escalation path**: texts the student is unsure of (none of them seen before), at the
   teacher's concurrency (32): every request is a cache lookup, a teacher call and a recorded
   call; then the same texts again, answered from the store's cache of paid calls. The store
   work happens off the event loop (since the re-house), so its p99 is what to compare;
6. **audit**: after a clean shutdown (SIGTERM), exactly one audit-log row per request sent.

To compare with another version of downsize, run this script with ``PYTHONPATH`` pointing at
that version's ``src`` (e.g. a ``git worktree`` of an older commit); the few lines marked
"older layout" keep it working against the layout before the re-house.

    python benchmarks/bench_gateway.py [--requests 10000] [--concurrency 64] [--workers 1]
                                       [--teacher-latency-ms 300] [--teacher-requests 1000]

Writes benchmarks/results/gateway-w<workers>-<fast|plain>.json ("fast" when uvloop, httptools and
orjson are importable: ``pip install 'uvicorn[standard]' orjson``). Targets: ≥ 1,000 requests/s on the student
path and gateway overhead ≤ 3 ms at p99, on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from downsize.data import read_texts
from downsize.demo import demo_data
from downsize.project import Project

try:
    from downsize.server.keys import create_key
except ImportError:  # older layout (before the re-house)
    from downsize.keys import create_key  # type: ignore[no-redef]
from downsize.replay import ReplayProcess
from downsize.store import RequestLog, SpotCheck, Store

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
PRICE_IN, PRICE_OUT = 2.50, 10.00  # GPT-4o list price, $ per 1M tokens
LABELS = {"earn": "earnings", "acq": "acquisitions", "crude": "crude oil", "trade": "trade",
          "money-fx": "money markets and FX", "interest": "interest rates", "ship": "shipping", "grain": "grain"}

CONFIG = """\
store: sqlite:///.downsize/downsize.db
teachers:
  default:
    base_url: {url}
    model: replay-gpt-4o
    price_per_1m_input: {pin}
    price_per_1m_output: {pout}
    max_concurrency: {teacher_conc}
    timeout_s: 30
    max_retries: 2
tasks:
  news:
    instructions: Route the newswire story to the desk that should handle it.
    labels: {labels}
    student: tfidf
    alpha: {alpha}
    spot_check_rate: {spot}{folds}
server:
  rate_limit_per_minute: 100000000
  max_batch: 256
  deadline_s: 10
"""


# ---------------------------------------------------------------------------------
# a small load generator: raw HTTP/1.1 keep-alive over asyncio streams
# ---------------------------------------------------------------------------------
def _request(port: int, key: str, body: dict[str, Any]) -> bytes:
    payload = json.dumps(body).encode()
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload


async def _drive(port: int, requests: list[bytes], concurrency: int) -> dict[str, Any]:
    """Send every request over ``concurrency`` keep-alive connections; per-request latency and outcome."""
    lat = np.zeros(len(requests))
    who: list[str] = [""] * len(requests)
    cost = np.zeros(len(requests))
    nxt = iter(range(len(requests)))

    async def conn() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in nxt:
                t0 = time.perf_counter()
                writer.write(requests[i])
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                status = int(lines[0].split()[1])
                n = 0
                by, usd = str(status), 0.0
                for line in lines[1:]:
                    k, _, v = line.partition(b":")
                    k = k.strip().lower()
                    if k == b"content-length":
                        n = int(v)
                    elif k == b"x-downsize-answered-by":
                        by = v.strip().decode()
                    elif k == b"x-downsize-cost-usd":
                        usd = float(v)
                await reader.readexactly(n)
                lat[i] = time.perf_counter() - t0
                who[i], cost[i] = by, usd
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(conn() for _ in range(min(concurrency, len(requests)))))
    wall = time.perf_counter() - t0
    ms = lat * 1000
    by: dict[str, int] = {}
    for w in who:
        by[w] = by.get(w, 0) + 1
    return {"requests": len(requests), "concurrency": concurrency, "seconds": round(wall, 3),
            "rps": round(len(requests) / wall, 1), "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p95_ms": round(float(np.percentile(ms, 95)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "answered_by": by, "usd_per_1k": round(float(cost.sum()) / len(requests) * 1000, 6)}


def drive(port: int, requests: list[bytes], concurrency: int) -> dict[str, Any]:
    try:
        import uvloop  # type: ignore[import-not-found]

        return uvloop.run(_drive(port, requests, concurrency))  # type: ignore[no-any-return]
    except ImportError:
        return asyncio.run(_drive(port, requests, concurrency))


# ---------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_records(path: Path, texts: list[str], labels: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        w.writerows(zip(texts, labels))
    return path


class Gateway:
    """``downsize serve`` in a child process."""

    def __init__(self, config: Path, workers: int, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "downsize.cli", "serve", "--config", str(config), "--port", str(self.port),
             "--workers", str(workers), "--log-level", "warning"], env=env)
        import httpx

        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"the gateway exited with {self.proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise SystemExit("the gateway did not start")
            time.sleep(0.2)
        time.sleep(1.0 if workers > 1 else 0.2)  # let every worker finish its startup

    def stop(self) -> float:
        t0 = time.perf_counter()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=120)
        return time.perf_counter() - t0


def _confidences(project: Project, texts: list[str]) -> list[float]:
    cas = project.cascade("news")
    if not hasattr(cas, "score"):  # older layout (before the re-house)
        return [float(c) for c in cas.student_scores(texts)[1]]
    return [s.confidence for s in cas.score(texts)]


def student_p99(project: Project, texts: list[str], n: int = 2000) -> dict[str, float]:
    cas = project.cascade("news")
    one = cas.score if hasattr(cas, "score") else cas.student_scores  # older layout
    ms = []
    for i in range(n):
        t0 = time.perf_counter()
        one([texts[i % len(texts)]])
        ms.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def _folds(args: argparse.Namespace) -> str:
    """The task's ``calibration_folds`` line, only when asked for (older layouts have no such key)."""
    return "" if args.calibration_folds is None else f"\n    calibration_folds: {args.calibration_folds}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--teacher-latency-ms", type=float, default=300.0)
    ap.add_argument("--teacher-requests", type=int, default=1000)
    ap.add_argument("--alpha", type=float, default=0.02)
    ap.add_argument("--teacher-concurrency", type=int, default=32,
                    help="The teacher's max_concurrency (httpx's pool slows down past ~32 connections).")
    ap.add_argument("--spot-check-rate", type=float, default=0.02)
    ap.add_argument("--calibration-folds", type=int, default=None,
                    help="Set the task's calibration_folds (0: a held-out split, as before cross-fitting; the "
                         "escalation section needs ≥ 50 texts the student is unsure of). Unset: the default.")
    ap.add_argument("--keep", action="store_true", help="Keep the project directory.")
    ap.add_argument("--project", type=Path, help="Reuse (or create and keep) the project in this directory.")
    args = ap.parse_args()

    tr_path, te_path = demo_data()
    if (SHARED / "reuters_r8-train.csv.gz").exists():
        tr_path, te_path = SHARED / "reuters_r8-train.csv.gz", SHARED / "reuters_r8-test.csv.gz"
    train, test = read_texts(tr_path, label_col="label"), read_texts(te_path, label_col="label")
    d = args.project or Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    d.mkdir(parents=True, exist_ok=True)
    reuse = (d / "built").exists()
    if args.project:
        args.keep = True
    records = _write_records(d / "records.csv.gz", train.texts + test.texts, (train.labels or []) + (test.labels or []))
    out: dict[str, Any] = {"workers": args.workers, "cores": os.cpu_count(), "data": tr_path.name,
                           "teacher_latency_ms": args.teacher_latency_ms, "spot_check_rate": args.spot_check_rate}
    print(f"project in {d}; data {tr_path.name} ({len(train):,} train / {len(test):,} test)", flush=True)

    with ReplayProcess(records) as fast:
        (d / "downsize.yaml").write_text(CONFIG.format(url=fast.base_url, pin=PRICE_IN, pout=PRICE_OUT,
                                                       labels=json.dumps(LABELS), alpha=args.alpha, spot=0.0, folds=_folds(args),
                                                       teacher_conc=args.teacher_concurrency))
        with Project.open(d / "downsize.yaml") as p:
            t0 = time.perf_counter()
            if not reuse:
                p.label("news", tr_path, progress=False)
                p.train("news", kind="tfidf")
                p.calibrate("news")
                (d / "built").touch()
            run = p.store.latest_calibration("news")
            print(f"labelled, trained, calibrated in {time.perf_counter() - t0:.1f}s: λ={run.threshold:.4f}, "
                  f"coverage {run.coverage:.1%} at α={run.alpha}", flush=True)
            conf = _confidences(p, test.texts)
            confident = [t for t, c in zip(test.texts, conf) if c >= (run.threshold or 2)]
            n_t = min(args.teacher_requests, len(test.texts))
            # escalation texts: unsure ones not sent in the sections before (the train split's were labelled
            # through the other replay teacher, whose base URL is part of the cache key)
            pool = test.texts[n_t:] + train.texts
            unsure = [t for t, c in zip(pool, _confidences(p, pool)) if c < (run.threshold or 2)][:500]
            out["student_alone"] = student_p99(p, confident)
            run_tag = f"{time.time():.0f}"
            keys = {name: create_key(p.store, f"{name}-{run_tag}").secret
                    for name in ("warm", "load", "seq", "c8", "cascade", "teacher", "esc")}
    out["threshold"], out["coverage_calibrated"] = run.threshold, run.coverage

    env = dict(os.environ)
    probe = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(','.join(m for m in "
                            "('uvloop', 'httptools', 'orjson') if u.find_spec(m)))"], env=env, capture_output=True,
                           text=True)
    out["speedups_installed"] = probe.stdout.strip() or "none"
    print(f"optional speed-ups importable by the gateway: {out['speedups_installed']}", flush=True)
    with ReplayProcess(records, latency_ms=args.teacher_latency_ms) as slow:
        (d / "downsize.yaml").write_text(CONFIG.format(url=slow.base_url, pin=PRICE_IN, pout=PRICE_OUT,
                                                       labels=json.dumps(LABELS), alpha=args.alpha,
                                                       spot=args.spot_check_rate, folds=_folds(args),
                                                       teacher_conc=args.teacher_concurrency))
        gw = Gateway(d / "downsize.yaml", args.workers, env)
        port = gw.port
        try:
            def reqs(key: str, texts: list[str], n: int, model: str = "downsize/news") -> list[bytes]:
                return [_request(port, key, {"model": model,
                                             "messages": [{"role": "user", "content": texts[i % len(texts)]}]})
                        for i in range(n)]

            drive(port, reqs(keys["warm"], confident, 500), args.concurrency)
            sent = {"warm": 500}
            out["student_path"] = drive(port, reqs(keys["load"], confident, args.requests), args.concurrency)
            sent["load"] = args.requests
            print("student path:", out["student_path"], flush=True)
            out["sequential"] = drive(port, reqs(keys["seq"], confident, 2000), 1)
            sent["seq"] = 2000
            out["concurrency_8"] = drive(port, reqs(keys["c8"], confident, 3000), 8)
            sent["c8"] = 3000
            print("one at a time:", out["sequential"], "\nconcurrency 8:", out["concurrency_8"], flush=True)
            # real traffic and teacher-only at the teacher's own concurrency: latency, not queueing
            out["cascade_real_traffic"] = drive(port, reqs(keys["cascade"], test.texts, n_t), args.teacher_concurrency)
            sent["cascade"] = n_t
            print("cascade on test texts:", out["cascade_real_traffic"], flush=True)
            # teacher-only: the same texts passed through to the teacher (model other than downsize/<task>)
            out["teacher_only"] = drive(port, reqs(keys["teacher"], test.texts, n_t, model="gpt-4o"),
                                        args.teacher_concurrency)
            sent["teacher"] = n_t
            print("teacher only:", out["teacher_only"], flush=True)
            if len(unsure) >= 50:  # texts not seen above: each is a fresh teacher call, then a cache hit
                out["escalation_fresh"] = drive(port, reqs(keys["esc"], unsure, len(unsure)), args.teacher_concurrency)
                out["escalation_cached"] = drive(port, reqs(keys["esc"], unsure, len(unsure)), args.teacher_concurrency)
                sent["esc"] = 2 * len(unsure)
                print("escalations, fresh:", out["escalation_fresh"], "\nescalations, cached:",
                      out["escalation_cached"], flush=True)
        finally:
            out["shutdown_s"] = round(gw.stop(), 2)

    with Store(f"sqlite:///{d / '.downsize' / 'downsize.db'}") as st, st.session() as s:
        from sqlalchemy import func, select

        from downsize.store import ApiKey

        ids = {n.rsplit("-", 1)[0]: k for n, k in s.execute(select(ApiKey.name, ApiKey.key_id))
               if n.endswith(f"-{run_tag}")}
        audit = {}
        for name, n in sent.items():
            rows = s.scalar(select(func.count()).select_from(RequestLog).where(RequestLog.client_key_id == ids[name]))
            audit[name] = {"sent": n, "rows": rows}
        mine = select(RequestLog.request_id).where(RequestLog.client_key_id.in_(list(ids.values())))
        spot = s.scalar(select(func.count()).select_from(SpotCheck).where(SpotCheck.request_id.in_(mine)))
        spot_usd = float(s.scalar(select(func.coalesce(func.sum(SpotCheck.teacher_cost_usd), 0.0))
                                  .where(SpotCheck.request_id.in_(mine))) or 0.0)
        student_rows = s.scalar(select(func.count()).select_from(RequestLog).where(
            RequestLog.answered_by == "student", RequestLog.client_key_id.in_(list(ids.values()))))
    out["audit"] = audit
    out["spot_checks"] = {"n": spot, "usd": spot_usd, "student_answers": student_rows,
                          "usd_per_1k_student_answers": spot_usd / max(1, student_rows) * 1000}
    exact = all(v["sent"] == v["rows"] for v in audit.values())

    sp, sa = out["student_path"], out["student_alone"]
    print("\n== downsize gateway benchmark ==")
    print(f"{args.workers} worker(s) on {os.cpu_count()} cores; load generator on the same machine; "
          f"speed-ups: {out['speedups_installed']}")
    print(f"student path, {sp['requests']:,} requests at concurrency {sp['concurrency']}: {sp['rps']:,.0f} req/s "
          f"(target ≥ 1,000), p50 {sp['p50_ms']:.2f} ms, p99 {sp['p99_ms']:.2f} ms")
    r = out["sequential"]
    print(f"overhead, one request at a time: gateway p99 {r['p99_ms']:.2f} ms − student p99 {sa['p99_ms']:.2f} ms = "
          f"{r['p99_ms'] - sa['p99_ms']:.2f} ms (target ≤ 3 ms); at p50 {r['p50_ms']:.2f} − {sa['p50_ms']:.2f} = "
          f"{r['p50_ms'] - sa['p50_ms']:.2f} ms; {r['rps']:,.0f} req/s")
    r = out["concurrency_8"]
    print(f"8 clients at once (they share the CPU, so this is queueing, not overhead): p50 {r['p50_ms']:.2f} ms, "
          f"p99 {r['p99_ms']:.2f} ms, {r['rps']:,.0f} req/s")
    c, t = out["cascade_real_traffic"], out["teacher_only"]
    share = c["answered_by"].get("student", 0) / c["requests"]
    print(f"\n{'':28}{'cascade (gateway)':>20}{'teacher only':>16}")
    print(f"{'requests':28}{c['requests']:>20,}{t['requests']:>16,}")
    print(f"{'answered locally':28}{share:>20.1%}{0:>16.0%}")
    print(f"{'latency p50 ms':28}{c['p50_ms']:>20.1f}{t['p50_ms']:>16.1f}")
    print(f"{'latency p99 ms':28}{c['p99_ms']:>20.1f}{t['p99_ms']:>16.1f}")
    print(f"{'$ per 1k requests':28}{c['usd_per_1k']:>20.4f}{t['usd_per_1k']:>16.4f}")
    print(f"{'requests/s':28}{c['rps']:>20,.0f}{t['rps']:>16,.0f}")
    for name in ("escalation_fresh", "escalation_cached"):
        if name in out:
            e = out[name]
            print(f"{name.replace('_', ' ')} ({e['requests']} unsure texts at concurrency {e['concurrency']}): "
                  f"p50 {e['p50_ms']:.1f} ms, p99 {e['p99_ms']:.1f} ms, {e['rps']:,.0f} req/s, {e['answered_by']}")
    print(f"\naudit log after SIGTERM ({out['shutdown_s']} s to stop): "
          + ", ".join(f"{k} {v['rows']:,}/{v['sent']:,}" for k, v in audit.items())
          + (" — exactly one row per request" if exact else " — MISMATCH"))
    print(f"spot checks: {spot:,} recorded for {student_rows:,} student answers (rate {args.spot_check_rate:g}, "
          f"capped at a quarter of the teacher's concurrency): ${out['spot_checks']['usd_per_1k_student_answers']:.4f} "
          "per 1k student answers on top of the cascade's $")
    RESULTS.mkdir(exist_ok=True)
    tag = "fast" if out["speedups_installed"].count(",") == 2 else "plain"
    path = RESULTS / f"gateway-w{args.workers}-{tag}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    if not args.keep:
        import shutil

        shutil.rmtree(d, ignore_errors=True)
    if not exact:
        sys.exit(1)


if __name__ == "__main__":
    main()
