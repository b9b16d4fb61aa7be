"""``downsize.discover`` on constructed traffic: template purity, verdicts, certified shares, speed.

1. **Templates and verdicts per format.** ``make_traffic.build(--n)`` over the training splits,
   written in every format (``make_traffic.write_all``), read back and audited. Per format:
   purity and completeness of the call sites against the true templates, bad lines found vs
   put in. Side by side, the baseline: drain3 0.9.11 (when installed) on the same requests,
   on the whole message and on the same windows the miner sees.
   **Many call sites**: ``make_traffic.many_specs(k)`` (k = 10, 30, 60 made-up call sites in the
   shapes apps use), with the system prompt logged and without it (the gateway logs only the
   last user message), against the oracle that groups by exactly what is logged (call sites
   whose logged parts are identical cannot be told apart).
2. **The verdict table** (chat pairs): per true template, the verdict, PII, $/month now and with
   the cascade, the certified local share. Open-ended templates must never be recommended.
3. **The projection against fresh traffic.** Fresh requests of the same templates from the test
   splits: the miner assigns them, each certified student answers those at or above its λ;
   the realised local share must fall in the certified interval and the realised disagreement
   with the (recorded) teacher stay ≤ α.
4. **Speed.** Time to audit ``--speed-n`` log lines (chat pairs JSONL, default 100k) end to end,
   with the stages (read, templates, profile incl. PII and names, certify). Target ≤ 60 s on 2 cores.

Usage::

    python benchmarks/bench_discover.py                      # ~5 min on 2 busy cores
    python benchmarks/bench_discover.py --n 5000 --speed-n 20000 --no-drain3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_traffic as mt

from downsize.discover import (
    default_certifier,
    discover,
    normalise_answer,
    purity,
    template_scores,
)
from downsize.discover.pii import names_available

RESULTS = Path(__file__).resolve().parent / "results"


def drain_baseline(records: list[Any], true: list[str], windows: bool) -> dict[str, Any]:
    from drain3 import TemplateMiner as Drain
    from drain3.masking import MaskingInstruction
    from drain3.template_miner_config import TemplateMinerConfig

    cfg = TemplateMinerConfig()
    cfg.masking_instructions = [MaskingInstruction(r"\S*\d\S*", "NUM"), MaskingInstruction(r"\S*@\S*", "AT")]
    miner = Drain(config=cfg)
    t0 = time.perf_counter()
    ids = []
    for r in records:
        sys_, text = r.system, r.text
        if windows:
            toks = text.split()
            text = " ".join(toks[:24] + ["…"] + toks[-16:]) if len(toks) > 40 else text
        ids.append(miner.add_log_message(f"{sys_} ||| {text}")["cluster_id"])
    p, c = purity(ids, true)
    return {"purity": p, "completeness": c, "clusters": len(set(ids)), "seconds": time.perf_counter() - t0}


def by_template(d: Any, true: list[str]) -> dict[str, dict[str, Any]]:
    labels = d.miner.labels_.tolist()
    scores = template_scores(labels, true)
    pos = {p.template.id: i for i, p in enumerate(d.profiles)}
    out = {}
    for name, s in sorted(scores.items()):
        i = pos[s["cluster"]]
        p, v = d.profiles[i], d.verdicts[i]
        out[name] = {"recall": s["recall"], "purity": s["purity"], "cluster": s["cluster"], "n": p.n,
                     "verdict": f"{v.scope} {v.kind or ''}".strip(), "private": list(v.pii_kinds),
                     "cost_month_now": v.cost_month_now, "cost_month_cascade": v.cost_month_cascade,
                     "local_share": v.local_share,
                     "interval": v.certification.coverage_interval if v.certification else None,
                     "recommendation": v.recommendation, "deterministic": p.deterministic}
    return out


def many_sites(n: int, ks: tuple[int, ...] = (10, 30, 60)) -> list[dict[str, Any]]:
    from downsize.discover import LogRecord, TemplateMiner

    data = mt.load_data("train")
    out = []
    for k in ks:
        specs = mt.many_specs(k, seed=k)
        spec = {s.name: s for s in specs}
        calls = mt.build(n, specs=specs, seed=3, data=data)
        recs = mt.to_records(calls)
        true = [c.template for c in calls]
        for logged, rs, key in (("system + user", recs, lambda s: (s.system, s.user)),
                                ("user only", [LogRecord(r.messages[-1:], r.response, r.model) for r in recs],
                                 lambda s: s.user)):
            t0 = time.process_time()
            m = TemplateMiner().fit(rs)
            p, c = purity(m.labels_.tolist(), true)
            sc = template_scores(m.labels_.tolist(), true)
            ok = sum(1 for v in sc.values() if v["recall"] >= 0.95 and v["purity"] >= 0.95)
            oracle = purity([key(spec[t]) for t in true], true)[0]
            out.append({"sites": k, "logged": logged, "templates": len(m.templates_), "purity": p,
                        "oracle_purity": oracle, "completeness": c, "recovered": ok,
                        "cpu_seconds": time.process_time() - t0})
    return out


def fresh_check(d: Any, n_fresh: int, seed: int) -> dict[str, Any]:
    """Apply each certified student to fresh traffic of the same templates (test splits)."""
    calls = mt.build(n_fresh, split="test", seed=seed)
    recs = mt.to_records(calls)
    assigned = d.miner.predict(recs)
    out = {}
    for p, v in zip(d.profiles, d.verdicts):
        cert = v.certification
        if cert is None or cert.model is None or cert.threshold is None:
            continue
        idx = np.flatnonzero(assigned == p.template.id)
        if len(idx) == 0:
            continue
        task = cert.task
        recs_i = [recs[i] for i in idx]
        texts, ref, _ = _reference(d, p, v, recs_i)
        pred, conf = task.score(cert.model, texts)
        local = np.asarray(conf) >= cert.threshold
        wrong = task.disagreements(pred, ref) > 0
        share = float(local.mean())
        dis = float(wrong[local].mean()) if local.any() else 0.0
        lo, hi = cert.coverage_interval
        truth = Counter(calls[i].template for i in idx).most_common(1)[0][0]
        out[truth] = {"n_fresh": len(texts), "certified": cert.coverage, "interval": [lo, hi], "realised": share,
                      "in_interval": bool(lo <= share <= hi), "disagreement": dis, "alpha": cert.alpha,
                      "within_alpha": dis <= cert.alpha}
    return out


def _reference(d: Any, p: Any, v: Any, recs: list[Any]) -> tuple[list[str], list[Any], int]:
    """Texts and the logged answers as the certified task's answers (what the guarantee is about)."""
    from downsize.discover._discovery import task_pairs

    _, texts, answers, dropped = task_pairs(p, v, [r.text for r in recs],
                                            [normalise_answer(r.response or "") for r in recs])
    return texts, answers, dropped


def through_gateway(n: int, seed: int) -> dict[str, Any]:
    """``n`` requests driven through ``downsize serve`` pass-through to the replay teacher, audited from its log."""
    with tempfile.TemporaryDirectory() as tmp:
        calls = mt.build(n, seed=seed)
        url = f"sqlite:///{Path(tmp) / 'gateway.db'}"
        t0 = time.perf_counter()
        truth = mt.drive_gateway(calls, url)
        drive_s = time.perf_counter() - t0
        d = discover([url], certifier=None)
        true = [truth.get(r.id, "?") for r in d.records]
        p, c = purity(d.miner.labels_.tolist(), true)
        per = by_template(d, true)
    return {"requests": n, "logged": len(d.records), "templates": len(d.profiles), "purity": p, "completeness": c,
            "drive_seconds": drive_s, "worst_recall": min(x["recall"] for x in per.values()),
            "open_ended_never_recommended": all(per[t]["recommendation"] == "keep on the large model"
                                                for t in ("story_summary", "review_reply") if t in per),
            "per_template": per}


def speed(n: int, out: Path) -> dict[str, Any]:
    calls = mt.build(n, seed=2)
    paths = mt.write_all(calls, out, ["chat_pairs"], seed=2)["chat_pairs"]
    del calls
    with open(paths[0], "rb") as fh:
        lines = sum(1 for _ in fh)
    t0, c0 = time.perf_counter(), time.process_time()
    d = discover(paths)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"lines": lines, "seconds": total, "cpu_seconds": cpu, "stages": d.timings, "cpu_stages": d.cpu_timings,
            "templates": len(d.profiles), "names_checked": names_available(), "load_average": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--fresh", type=int, default=10000)
    ap.add_argument("--speed-n", type=int, default=100_000)
    ap.add_argument("--no-drain3", action="store_true")
    ap.add_argument("--gateway-n", type=int, default=3000, help="requests driven through downsize serve")
    ap.add_argument("--json", type=Path, default=RESULTS / "discover.json")
    a = ap.parse_args()
    print(f"# bench_discover: {a.n:,} requests, {os.cpu_count()} cores (timings on a shared, busy machine), "
          f"names check: {'spaCy' if names_available() else 'skipped (spaCy not installed)'}")
    results: dict[str, Any] = {"n": a.n, "formats": {}}
    with tempfile.TemporaryDirectory() as tmp:
        calls = mt.build(a.n, seed=0)
        paths = mt.write_all(calls, Path(tmp), seed=0)
        truth = {c.id: c.template for c in calls}
        sources = {"chat_pairs": paths["chat_pairs"], "openai_batch": paths["openai_batch"],
                   "litellm (json)": paths["litellm"][:1], "litellm (csv)": paths["litellm"][1:],
                   "downsize gateway": paths["downsize"]}
        print("\n## 1. call sites per format (target: purity ≥ 0.95)\n")
        print(f"{'format':18s} {'records':>8s} {'bad':>4s} {'templates':>9s} {'purity':>7s} {'complete':>8s} "
              f"{'worst template recall':>22s} {'seconds':>8s}")
        main_d = None
        for fmt, ps in sources.items():
            t0 = time.perf_counter()
            d = discover(ps, certifier=default_certifier if fmt == "chat_pairs" else None)
            secs = time.perf_counter() - t0
            true = [truth[r.id] for r in d.records]
            p, c = purity(d.miner.labels_.tolist(), true)
            per = by_template(d, true)
            worst_name, worst = min(per.items(), key=lambda kv: kv[1]["recall"])
            worst_s = f"{worst_name} {worst['recall']:.3f}"
            bad = d.read.report.bad_count
            print(f"{fmt:18s} {len(d.records):8,d} {bad:4d} {len(d.profiles):9d} {p:7.3f} {c:8.3f} "
                  f"{worst_s:>22s} {secs:8.1f}")
            results["formats"][fmt] = {"records": len(d.records), "bad": bad, "templates": len(d.profiles),
                                       "purity": p, "completeness": c, "per_template": per, "seconds": secs,
                                       "notes": [n for f in d.read.report.files for n in f.notes]}
            if fmt == "chat_pairs":
                main_d, main_true = d, true
        assert main_d is not None
        print(f"\n   many call sites ({a.n:,} requests each; recovered = recall and purity ≥ 0.95):")
        ms = many_sites(a.n)
        for r in ms:
            print(f"   {r['sites']:3d} sites, {r['logged']:14s} templates {r['templates']:3d} purity {r['purity']:.3f} "
                  f"(oracle {r['oracle_purity']:.3f}) completeness {r['completeness']:.3f} recovered "
                  f"{r['recovered']}/{r['sites']}")
        results["many_sites"] = ms
        if a.gateway_n > 0:
            print(f"\n   through `downsize serve` (pass-through to the replay teacher, real uvicorn + openai SDK), "
                  f"{a.gateway_n:,} requests:")
            gwr = through_gateway(a.gateway_n, seed=3)
            print(f"   logged {gwr['logged']:,}, templates {gwr['templates']}, purity {gwr['purity']:.3f}, completeness "
                  f"{gwr['completeness']:.3f}, worst template recall {gwr['worst_recall']:.3f}; open-ended never "
                  f"recommended: {gwr['open_ended_never_recommended']} ({gwr['drive_seconds']:.0f} s to drive)")
            results["through_gateway"] = gwr
        if not a.no_drain3:
            try:
                print(f"\n   baseline drain3 on the same {len(main_d.records):,} chat-pair requests:")
                for win in (False, True):
                    r = drain_baseline(main_d.records, main_true, win)
                    label = "windows (24 first + 16 last tokens)" if win else "whole message"
                    print(f"   drain3 {label:36s} purity {r['purity']:.3f} completeness {r['completeness']:.3f} "
                          f"clusters {r['clusters']:,} ({r['seconds']:.1f} s)")
                    results.setdefault("drain3", {})[label] = r
            except ImportError:
                print("   (drain3 not installed: pip install drain3==0.9.11 for the baseline)")
        print("\n## 2. verdicts (chat pairs; open-ended must be 'keep on the large model')\n")
        per = results["formats"]["chat_pairs"]["per_template"]
        print(f"{'template':14s} {'n':>6s} {'verdict':17s} {'private':22s} {'$/mo now':>9s} {'local (certified)':>18s} "
              f"{'$/mo cascade':>12s}  recommendation")
        for name, s in per.items():
            loc = (f"{100 * s['local_share']:.0f} % ({100 * s['interval'][0]:.0f}–{100 * s['interval'][1]:.0f})"
                   if s["local_share"] is not None else "–")
            money = (lambda x: "–" if x is None else f"${x:,.2f}")
            print(f"{name:14s} {s['n']:6,d} {s['verdict']:17s} {', '.join(s['private']) or 'no':22s} "
                  f"{money(s['cost_month_now']):>9s} {loc:>18s} {money(s['cost_month_cascade']):>12s}  "
                  f"{s['recommendation']}")
        open_ok = all(per[t]["recommendation"] == "keep on the large model" for t in ("story_summary", "review_reply"))
        print(f"\nopen-ended never recommended: {open_ok}")
        results["open_ended_never_recommended"] = open_ok
        print(f"\n## 3. certified projection vs fresh traffic ({a.fresh:,} requests from the test splits)\n")
        fresh = fresh_check(main_d, a.fresh, seed=1)
        for name, f in fresh.items():
            print(f"{name:14s} n={f['n_fresh']:5,d} certified {100 * f['certified']:.1f} % "
                  f"[{100 * f['interval'][0]:.1f}, {100 * f['interval'][1]:.1f}] realised {100 * f['realised']:.1f} % "
                  f"(in interval: {f['in_interval']}); disagreement {100 * f['disagreement']:.2f} % "
                  f"(≤ α={100 * f['alpha']:g} %: {f['within_alpha']})")
        results["fresh"] = fresh
        if a.speed_n <= 0:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(results, indent=1, default=str))
            print(f"\nresults: {a.json}")
            return
        print(f"\n## 4. speed: audit of {a.speed_n:,} log lines (target ≤ 60 s on 2 cores; busy machine)\n")
        sp = speed(a.speed_n, Path(tmp) / "speed")
        st = ", ".join(f"{k} {v:.1f}" for k, v in sp["stages"].items())
        cst = ", ".join(f"{k} {v:.1f}" for k, v in sp["cpu_stages"].items())
        print(f"{sp['lines']:,} lines, {sp['templates']} templates: wall {sp['seconds']:.1f} s ({st}); "
              f"CPU {sp['cpu_seconds']:.1f} s ({cst})")
        print(f"load average during the run: {', '.join(f'{x:.1f}' for x in sp['load_average'])} on "
              f"{os.cpu_count()} cores: wall time is inflated by the other jobs; CPU time is what a quiet "
              "machine's wall time would be (single-threaded stages)")
        results["speed"] = sp
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nresults: {a.json}")


if __name__ == "__main__":
    main()
