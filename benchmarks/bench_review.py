"""Review-page benchmark (issue 13): how many items a reviewer can do per minute by keyboard.

Builds a ``news`` task whose queue holds ``--items`` items from gateway traffic (Reuters texts;
spot-check disagreements, contradicted escalations, fallbacks...), starts the real gateway on
loopback and drives ``/review`` in headless Chromium over CDP (the tests' pipe client), pressing
the page's keys (number keys, ``a``, ``s``) as a person would:

1. **page latency**: from the key press to the next item on screen, measured by the page itself
   (``performance.now()`` around the request and the render), at machine pace: the page's own
   cost per item, and the items/min ceiling it allows;
2. **paced reviewer**: the same keys with a fixed reading-and-deciding time per item
   (``--think-s``, default 1.5 and 2.5 s: a quick and a slower reviewer of short texts),
   wall-clock items/min over ``--paced`` items each.

The target is ≥ 20 items/minute; the page allows it as long as a reviewer's own time per item
stays under 60/20 − (page latency) seconds. Writes benchmarks/results/review.json and a
screenshot of the page, benchmarks/results/review_page.png.

    python benchmarks/bench_review.py [--items 120] [--paced 20] [--think-s 1.5 2.5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _review_data import config, log_traffic, reuters
from test_report_browser import CHROMIUM, Browser
from test_review_browser import Tab

from downsize.review import fill_queue
from downsize.server import ServerThread, create_app
from downsize.server.keys import create_key
from downsize.store import Store

TARGET_PER_MIN = 20.0
KEYS = ["1", "a", "s", "2", "a", "3", "s", "4"]


def _key_for(tab: Tab, i: int) -> str:
    """The i-th key of the plan, or a number key where there is no answer to accept."""
    k = KEYS[i % len(KEYS)]
    if k in "as":
        it = tab.js("window.__review.item")
        if it["teacher" if k == "a" else "student"] is None:
            return "1"
    return k


def run(n_items: int, paced: int, thinks: list[float]) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-review-"))
    cfg = config(tmp, task={"review_sample_rate": 0.02})
    store = Store(cfg.store_url())
    texts, labels = reuters()
    log_traffic(store, texts, labels)
    fill_queue(store, cfg, "news")
    key = create_key(store, "bench")
    browser = Browser(tmp / "profile")
    out: dict = {"items_in_queue": None, "target_items_per_min": TARGET_PER_MIN, "cores": os.cpu_count(),
                 "load_avg_1m": os.getloadavg()[0]}
    try:
        with ServerThread(create_app(cfg, store=store)) as srv:
            tab = Tab(browser, f"{srv.url}/review#key={key.secret}")
            tab.wait("document.body.dataset.state === 'item'")
            out["items_in_queue"] = int(tab.js("Number(document.getElementById('open').textContent"
                                               ".replace(/[^0-9]/g, ''))"))
            # 1. machine pace: the page's own latency per item
            t0 = time.perf_counter()
            for i in range(n_items):
                tab.press(_key_for(tab, i))
            wall = time.perf_counter() - t0
            lat = np.array(tab.js("window.__review.latencies"), dtype=float)
            out["machine_pace"] = {
                "items": n_items, "wall_s": wall, "items_per_min": n_items * 60 / wall,
                "page_latency_ms": {"p50": float(np.percentile(lat, 50)), "p95": float(np.percentile(lat, 95)),
                                    "max": float(lat.max())},
            }
            # 2. paced reviewers
            out["paced"] = []
            for think in thinks:
                t0 = time.perf_counter()
                for i in range(paced):
                    time.sleep(think)  # reading the text and deciding
                    tab.press(_key_for(tab, i))
                wall = time.perf_counter() - t0
                out["paced"].append({"think_s": think, "items": paced, "wall_s": wall,
                                     "items_per_min": paced * 60 / wall})
            shot = ROOT / "benchmarks" / "results" / "review_page.png"
            tab.screenshot(shot)
            out["screenshot"] = str(shot.relative_to(ROOT))
            tab.close()
    finally:
        browser.close()
        store.close()
    p50 = out["machine_pace"]["page_latency_ms"]["p50"]
    out["max_think_s_for_target"] = 60 / TARGET_PER_MIN - p50 / 1000
    out["pass"] = all(p["items_per_min"] >= TARGET_PER_MIN for p in out["paced"] if p["think_s"] <= 2.5)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=120, help="items reviewed at machine pace")
    ap.add_argument("--paced", type=int, default=20, help="items per paced run")
    ap.add_argument("--think-s", type=float, nargs="+", default=[1.5, 2.5], help="seconds per item, per paced run")
    args = ap.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"{CHROMIUM} is missing (apt-get install chromium)")
    res = run(args.items, args.paced, args.think_s)
    m = res["machine_pace"]
    print(f"review page, {res['items_in_queue']} items in the queue (load average {res['load_avg_1m']:.1f} on "
          f"{res['cores']} cores)")
    print(f"{'':34}{'items/min':>10}  {'target':>7}")
    print(f"{'machine pace (page ceiling)':34}{m['items_per_min']:>10.1f}  {TARGET_PER_MIN:>7.0f}   page latency "
          f"p50 {m['page_latency_ms']['p50']:.0f} ms, p95 {m['page_latency_ms']['p95']:.0f} ms")
    for p in res["paced"]:
        print(f"{'reviewer at ' + format(p['think_s'], 'g') + ' s per item':34}{p['items_per_min']:>10.1f}  "
              f"{TARGET_PER_MIN:>7.0f}")
    print(f"a reviewer meets the target while taking up to {res['max_think_s_for_target']:.2f} s per item")
    path = ROOT / "benchmarks" / "results" / "review.json"
    path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)} and {res['screenshot']}")


if __name__ == "__main__":
    main()
