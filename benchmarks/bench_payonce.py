"""Issue 9's batch-side defects, measured on a given source tree (before/after a change).

Runs real ``downsize label`` processes from ``--src`` (default: this tree's ``src``) against the
replay teacher (its call counter is the truth) on the bundled Reuters demo texts:

* two ``label`` runs at once on one store: teacher calls vs distinct texts, store spend vs what
  the runs say they paid;
* a closed port (default retries): exit code and seconds until it gives up;
* a teacher whose answers never fit the task: exit code and teacher calls;
* SIGTERM mid-run, then a restart: exit code, summary printed, calls paid twice;
* ``kill -9`` mid-run, then a restart: calls sent twice (and whether the restart says so);
* ``log export`` of a text with a NUL byte, and the mode of a new store file.

    nice -n 10 python benchmarks/bench_payonce.py --src /tmp/old/src --out benchmarks/results/payonce-before.json
    nice -n 10 python benchmarks/bench_payonce.py --out benchmarks/results/payonce-after.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from downsize.data import read_texts
from downsize.replay import ReplayServer

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "src" / "downsize" / "_assets" / "reuters_r8_demo-train.csv.gz"
LABELS = ["earn", "acq", "crude", "trade", "money-fx", "interest", "ship", "grain"]


def _config(d: Path, url: str, concurrency: int) -> Path:
    cfg = d / "downsize.yaml"
    cfg.write_text(
        "store: sqlite:///labels.db\nteachers:\n  default:\n"
        f"    base_url: {url}\n    model: replay\n    max_concurrency: {concurrency}\n"
        "    price_per_1m_input: 2.5\n    price_per_1m_output: 10\n    timeout_s: 10\n"
        "tasks:\n  news:\n    instructions: Route the story.\n"
        "    labels: {" + ", ".join(f"{k}: {k}" for k in LABELS) + "}\n")
    return cfg


def _data(d: Path, texts: list[str]) -> Path:
    p = d / "in.csv"
    with open(p, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text"])
        w.writerows([t] for t in texts)
    return p


def _label(src: str, cfg: Path, data: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": src, "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "downsize.cli", "label", "news", str(data), "-c", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cfg.parent, env=env)


def _store_spend(cfg: Path) -> tuple[float, int]:
    con = sqlite3.connect(cfg.parent / "labels.db")
    try:
        return con.execute("select coalesce(sum(cost_usd), 0), count(*) from teacher_calls").fetchone()
    finally:
        con.close()


def _cost(out: str) -> float:
    m = re.search(r"cost\s*\S*\s*\$(\d+\.\d+)", out)
    return float(m.group(1)) if m else float("nan")


def _idle(srv: ReplayServer) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + 15
    while srv.stats["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    return srv.stats


def concurrent(src: str, records: dict[str, str], texts: list[str]) -> dict:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as d, ReplayServer(records, latency_ms=100) as srv:
        cfg = _config(Path(d), srv.base_url, 8)
        data = _data(Path(d), texts)
        # the store and its examples exist already (as after a first `label --limit`): the two runs
        # then start together without racing to insert the same texts (the old code crashed there)
        code = ("import sys, csv; from downsize.config import load_config; from downsize.store import Store; "
                "st = Store(load_config(sys.argv[1]).store_url()); "
                "st.add_examples('news', [r[0] for r in list(csv.reader(open(sys.argv[2])))[1:]])")
        subprocess.run([sys.executable, "-c", code, str(cfg), str(data)], env={**os.environ, "PYTHONPATH": src},
                       cwd=d, check=True)
        procs = [_label(src, cfg, data) for _ in range(2)]
        outs = [p.communicate(timeout=600) for p in procs]
        spend, rows = _store_spend(cfg)
        return {"texts": len(texts), "teacher_calls": _idle(srv)["requests"], "store_rows": rows,
                "store_spend_usd": round(spend, 6), "runs_paid_usd": round(sum(_cost(o[0]) for o in outs), 6),
                "exit_codes": [p.returncode for p in procs],
                "errors": [o[1].strip().splitlines()[-1][:300] for p, o in zip(procs, outs) if p.returncode]}


def closed_port(src: str, texts: list[str]) -> dict:  # type: ignore[type-arg]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        cfg = _config(Path(d), f"http://127.0.0.1:{port}/v1", 8)
        t0 = time.perf_counter()
        p = _label(src, cfg, _data(Path(d), texts))
        out, err = p.communicate(timeout=900)
        return {"rows": len(texts), "exit_code": p.returncode, "seconds": round(time.perf_counter() - t0, 1),
                "stopped_early": "not attempted" in out}


def unparseable(src: str, texts: list[str]) -> dict:  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory() as d, ReplayServer({t: "bananas" for t in texts}) as srv:
        cfg = _config(Path(d), srv.base_url, 8)
        p = _label(src, cfg, _data(Path(d), texts))
        out, err = p.communicate(timeout=300)
        return {"rows": len(texts), "exit_code": p.returncode, "teacher_calls": _idle(srv)["requests"]}


def interrupted(src: str, records: dict[str, str], texts: list[str], sig: int) -> dict:  # type: ignore[type-arg]
    n = len(texts)
    with tempfile.TemporaryDirectory() as d, ReplayServer(records, latency_ms=100) as srv:
        cfg = _config(Path(d), srv.base_url, 8)
        data = _data(Path(d), texts)
        p = _label(src, cfg, data)
        deadline = time.monotonic() + 120
        while srv.stats["requests"] < n // 3 and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        p.send_signal(sig)
        out, err = p.communicate(timeout=120)
        first = _idle(srv)
        q = _label(src, cfg, data)
        out2, _ = q.communicate(timeout=300)
        after = _idle(srv)
        return {"rows": n, "exit_code": p.returncode, "summary_printed": "labelling news" in out,
                "paid_twice": after["requests"] - n, "sent_twice": after["requests"] + after["abandoned"] - n,
                "abandoned_at_signal": first["abandoned"], "restart_exit_code": q.returncode,
                "restart_reports_resent": "re-sent after a run died" in out2, "max_concurrency": 8}


def nul_and_mode(src: str) -> dict:  # type: ignore[type-arg]
    code = (
        "import os, stat, sys, tempfile\n"
        "from downsize.store import Store\nfrom downsize.audit.log import export_log\n"
        "d = tempfile.mkdtemp(); os.umask(0o022)\n"
        "st = Store(f'sqlite:///{d}/x.db')\n"
        "st.log_requests([{'request_id': 'a', 'model': 'm', 'input_hash': 'h', 'input_text': 'a\\x00b',"
        " 'answered_by': 'student', 'latency_ms': 1.0}])\n"
        "export_log(st, f'{d}/o.csv')\n"
        "print(open(f'{d}/o.csv', 'rb').read().count(b'\\x00'), oct(stat.S_IMODE(os.stat(f'{d}/x.db').st_mode)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": src}, timeout=120)
    nul, mode = out.stdout.split()
    return {"nul_bytes_in_csv": int(nul), "store_file_mode": mode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=str(ROOT / "src"))
    ap.add_argument("--rows", type=int, default=400)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--only", help="run one scenario (e.g. two_runs_at_once) and merge it into --out")
    a = ap.parse_args()
    data = read_texts(DEMO, label_col="label", limit=a.rows)
    records = dict(zip(data.texts, data.labels or []))
    texts = list(dict.fromkeys(data.texts))
    scenarios = {
        "two_runs_at_once": lambda: concurrent(a.src, records, texts),
        "closed_port": lambda: closed_port(a.src, texts[:200]),
        "unparseable": lambda: unparseable(a.src, texts[:60]),
        "sigterm": lambda: interrupted(a.src, records, texts[:200], signal.SIGTERM),
        "kill_9": lambda: interrupted(a.src, records, texts[:200], signal.SIGKILL),
        "export_and_mode": lambda: nul_and_mode(a.src),
    }
    res = json.loads(a.out.read_text()) if a.only and a.out and a.out.exists() else {}
    res["src"] = a.src
    for name, run in scenarios.items():
        if a.only in (None, name):
            res[name] = run()
    print(json.dumps(res, indent=2))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
