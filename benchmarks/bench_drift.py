"""Keeping the guarantee while traffic changes (issue 12): detection, suspension, retrain, promotion.

Real data, real parts: Reuters R8 (``../shared/data``, train and test pooled), a tfidf student
trained and calibrated by ``downsize.training`` at α on a real SQLite store, the live
:class:`~downsize.monitor.RiskMonitor` fed by spot checks (a uniform sample of the *answered*
requests), and on an alarm the task suspended: every request goes to the teacher and its answer
is stored as a shadow label; each time ``retrain_min_labels`` of them have come in,
:func:`downsize.lifecycle.retrain_task` trains a candidate on recent labels, calibrates it on
fresher ones and promotes it only if it certifies α there (then a fresh monitor, with
``version_delta(monitor_delta, 2)``). The gateway loop itself is tested end to end in
``tests/test_gateway_lifecycle.py``; here the same functions run in-process so many seeds fit
in a few minutes. The teacher is the recorded label (the replay teacher's answer).

Scenarios (phase 1: traffic like the calibration rows; phase 2: the shift):

* ``mix`` — the confusable pair money-fx / interest is rare (10 % of its rows kept) in the
  training and calibration data and in phase 1, then makes up 30 % of phase 2;
* ``noise`` — the traffic does not change, the teacher does: from phase 2 on it answers 15 %
  of texts with another label (``downsize.replay``'s ``--noise``, chosen by a hash of the
  text). No student can certify α = 5 % against that teacher, so the gate should keep refusing;
* ``none`` — no shift, traffic of the same length, ``--false-seeds`` random resplits of the
  rows one student did not train on into calibration rows and traffic: the share of seeds that
  ever alarm, which the monitor bounds by ``monitor_delta`` (when the calibration holds).

Printed per scenario: checks until the alarm (and requests after the shift), realised
disagreement of the student's answers before the alarm, during suspension (the answers are the
teacher's) and after promotion, against what happens today (spot checks recorded, nothing acts:
the student keeps answering the whole of phase 2).

    python benchmarks/bench_drift.py [--seeds 5] [--false-seeds 24] [--quick]

Writes benchmarks/results/drift.json and drift.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from downsize import lifecycle
from downsize.config import Config
from downsize.data import read_texts
from downsize.monitor import RiskMonitor, version_delta
from downsize.store import Store
from downsize.training import calibrate_task, load_student_version, train_task

HERE = Path(__file__).resolve().parent
DATA = next((p for p in (HERE.parent.parent / "shared" / "data", Path("/work/shared/data")) if p.exists()),
            HERE.parent.parent / "shared" / "data")
ALPHA, DELTA, MONITOR_DELTA = 0.05, 0.05, 0.05
SPOT_RATE = 0.1
RARE = ("money-fx", "interest")
MIN_LABELS = 400


def load_rows() -> list[tuple[str, str]]:
    tr = read_texts(DATA / "reuters_r8-train.csv.gz", label_col="label")
    te = read_texts(DATA / "reuters_r8-test.csv.gz", label_col="label")
    return list(dict(zip(tr.texts + te.texts, (tr.labels or []) + (te.labels or []))).items())


def config(d: Path, labels: list[str]) -> Config:
    return Config.model_validate({
        "store": f"sqlite:///{d / 'd.db'}", "home": str(d / "home"),
        "teachers": {"default": {"base_url": "http://127.0.0.1:9/v1", "model": "replay"}},
        "tasks": {"news": {"instructions": "Route the story.", "labels": {k: k for k in labels}, "student": "tfidf",
                           "alpha": ALPHA, "delta": DELTA, "monitor_delta": MONITOR_DELTA,
                           "retrain_min_labels": MIN_LABELS}},
    })


def noisy_teacher(rows: list[tuple[str, str]], labels: list[str], share: float, seed: int) -> list[str]:
    """The replay teacher's ``--noise``: a hash of (seed, text) picks the texts, another label is given."""
    out = []
    for t, y in rows:
        h = hashlib.sha256(f"{seed}\x00{t}".encode()).digest()
        if int.from_bytes(h[:8], "big") / 2**64 < share:
            others = [x for x in labels if x != y]
            y = others[int.from_bytes(h[8:16], "big") % len(others)]
        out.append(y)
    return out


def build(rows: list[tuple[str, str]], seed: int, scenario: str, n1: int) -> dict[str, Any]:
    """Split for one seed: base (train + calibration), phase 1, phase 2 (the shift)."""
    rng = random.Random(seed)
    rs = rows[:]
    rng.shuffle(rs)
    rare = [r for r in rs if r[1] in RARE]
    other = [r for r in rs if r[1] not in RARE]
    keep = len(rare) // 10
    mix = other + rare[:keep]  # the usual traffic: the confusable pair is rare
    rng.shuffle(mix)
    base, rest = mix[:4500], mix[4500:]
    p1 = rest[:n1]
    if scenario == "mix":
        shifted = rare[keep:]
        plain = rest[n1:n1 + int(len(shifted) * 7 / 3)]
        p2 = shifted + plain
        rng.shuffle(p2)
    else:
        p2 = rest[n1:]
    return {"base": base, "p1": p1, "p2": p2}


def run_seed(rows: list[tuple[str, str]], labels: list[str], seed: int, scenario: str, *, n1: int,
             retrain: bool) -> dict[str, Any]:
    split = build(rows, seed, scenario, n1)
    stream = split["p1"] + split["p2"]
    shift_at = len(split["p1"]) if scenario != "none" else None
    teacher = [y for _, y in stream]
    if scenario == "noise":
        teacher = teacher[:n1] + noisy_teacher(split["p2"], labels, 0.15, seed)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp), labels)
        store = Store(cfg.store_url())
        ids = store.add_examples("news", [t for t, _ in split["base"]], source="file")
        store.add_labels("news", list(zip(ids, [y for _, y in split["base"]])), source="teacher")
        train_task(store, cfg, "news", kind="tfidf", seed=seed)
        run, _ = calibrate_task(store, cfg, "news")
        task = cfg.task("news")
        rng = np.random.default_rng(seed)
        texts = [t for t, _ in stream]

        def serve_from(sv: Any, threshold: float | None, start: int) -> tuple[list[Any], np.ndarray]:
            st = load_student_version(sv, cfg.home_dir())
            pred, conf = task.score(st, texts[start:])
            return list(pred), np.asarray(conf)

        pred, conf = serve_from(lifecycle.live(store, "news").student, run.threshold, 0)
        # today: the first version answers the whole of phase 2 with its threshold (no monitor acts)
        lam0 = run.threshold if run.threshold is not None else 2.0
        s0 = shift_at or 0
        ans0 = [j for j in range(s0, len(stream)) if conf[j] >= lam0]
        today = float(np.mean([pred[j] != teacher[j] for j in ans0])) if ans0 else None
        offset, lam, epoch = 0, run.threshold, 1
        mon = RiskMonitor(ALPHA, version_delta(MONITOR_DELTA, epoch))
        served: list[tuple[int, str, bool]] = []  # (request, who, wrong vs teacher)
        checks, alarm_req, alarm_checks, suspended, promoted_at, attempts = 0, None, None, False, None, []
        pending: list[tuple[str, str]] = []
        checks_at_shift = None
        for i in range(len(stream)):
            if i == shift_at:
                checks_at_shift = mon.state.n_checks
            if suspended:
                served.append((i, "shadow", False))
                pending.append((texts[i], teacher[i]))
                if retrain and len(pending) >= MIN_LABELS:
                    ids = store.add_examples("news", [t for t, _ in pending], source="shadow")
                    store.add_labels("news", list(zip(ids, [y for _, y in pending])), source="teacher",
                                     origin="shadow")
                    pending = []
                    try:
                        res = lifecycle.retrain_task(store, cfg, "news", seed=seed)
                        attempts.append({"at": i, "passed": res.passed, "n_calib": res.n_calib,
                                         "threshold": res.threshold, "coverage": res.coverage})
                    except Exception as exc:  # too few labels for a label, say: keep collecting
                        attempts.append({"at": i, "error": str(exc)[:200]})
                        continue
                    if res.promoted:
                        now = lifecycle.live(store, "news")
                        pred, conf = serve_from(now.student, now.calibration.threshold, i + 1)
                        offset, lam, epoch = i + 1, now.calibration.threshold, now.epoch
                        mon = RiskMonitor(ALPHA, version_delta(MONITOR_DELTA, epoch))
                        suspended, promoted_at = False, i + 1
                continue
            j = i - offset
            if lam is not None and conf[j] >= lam:
                wrong = pred[j] != teacher[i]
                served.append((i, "student", wrong))
                if rng.random() < SPOT_RATE:
                    checks += 1
                    st = mon.update(float(wrong))
                    if st.rejected and alarm_req is None:
                        alarm_req, alarm_checks, suspended = i, st.n_checks, True
                    elif st.rejected and promoted_at is not None:
                        suspended = True  # the promoted version alarmed too
            else:
                served.append((i, "teacher", False))
        store.close()

    def rate(lo: int, hi: int) -> tuple[float | None, int]:
        w = [wr for i, who, wr in served if lo <= i < hi and who == "student"]
        return (float(np.mean(w)) if w else None), len(w)

    n = len(stream)
    before = rate(s0, alarm_req if alarm_req is not None else n)
    after = rate(promoted_at, n) if promoted_at is not None else (None, 0)
    return {
        "seed": seed, "scenario": scenario, "requests": n, "shift_at": shift_at, "alarm_request": alarm_req,
        "checks_to_alarm": alarm_checks, "checks_after_shift_to_alarm": None if alarm_checks is None
        or checks_at_shift is None else alarm_checks - checks_at_shift, "requests_after_shift_to_alarm": None if alarm_req is None or shift_at is None
        else alarm_req - shift_at, "promoted_at": promoted_at, "attempts": attempts,
        "disagreement_before_alarm": before[0], "answered_before_alarm": before[1],
        "disagreement_during_suspension": 0.0 if alarm_req is not None else None,
        "disagreement_after_promotion": after[0], "answered_after_promotion": after[1],
        "calibration_threshold": run.threshold, "first_version_risk_on_phase1": rate(0, s0 or n)[0],
        "today_phase2": today,
    }


def unshifted(rows: list[tuple[str, str]], labels: list[str], seeds: int, n_traffic: int) -> list[dict[str, Any]]:
    """False alarms: one student (trained by ``train_task`` on a fixed part of the usual traffic),
    then per seed a random resplit of the rest into calibration rows and live traffic — exchangeable
    given the student, so each seed is a fresh draw of the guarantee — λ by the same calibrator,
    and the live monitor over the whole traffic."""
    from downsize.calibration import ThresholdCalibrator

    split = build(rows, 0, "none", 0)
    pool = split["base"][3000:] + split["p2"]  # everything the student did not train on
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp), labels)
        with Store(cfg.store_url()) as store:
            train = split["base"][:3000]
            ids = store.add_examples("news", [t for t, _ in train], source="file")
            store.add_labels("news", list(zip(ids, [y for _, y in train])), source="teacher")
            train_task(store, cfg, "news", kind="tfidf", seed=0)
            sv = lifecycle.live(store, "news").student
            st = load_student_version(sv, cfg.home_dir())
            task = cfg.task("news")
            pred, conf = task.score(st, [t for t, _ in pool])
    wrong = np.array([p != y for p, (_, y) in zip(pred, pool)])
    conf = np.asarray(conf)
    out = []
    for s in range(seeds):
        rng = np.random.default_rng(1000 + s)
        order = rng.permutation(len(pool))
        live, cal = order[:n_traffic], order[n_traffic:]
        calib = ThresholdCalibrator(alpha=ALPHA, delta=DELTA, bound=task.bound).fit(conf[cal], ~wrong[cal])
        lam = calib.threshold_ if calib.threshold_ is not None else 2.0
        ans = live[conf[live] >= lam]
        checked = ans[rng.random(ans.size) < SPOT_RATE]
        mon = RiskMonitor.replay(wrong[checked].astype(float), ALPHA, version_delta(MONITOR_DELTA, 1))
        out.append({"seed": 1000 + s, "alarmed": mon.state.rejected, "checks": mon.state.n_checks,
                    "alarm_at": mon.state.alarm_at, "n_calib": int(cal.size), "requests": int(live.size),
                    "realised": float(wrong[ans].mean()) if ans.size else None})
    return out


def _med(xs: list[Any]) -> float | None:
    xs = [x for x in xs if x is not None]
    return float(np.median(xs)) if xs else None


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3, help="seeds per shifted scenario (each retrains)")
    ap.add_argument("--false-seeds", type=int, default=200, help="seeds of unshifted traffic (>= 20)")
    ap.add_argument("--n1", type=int, default=1000, help="requests before the shift")
    ap.add_argument("--quick", action="store_true", help="2 seeds per scenario, 4 unshifted")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "drift.json")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.false_seeds = 1, 20
    rows = load_rows()
    labels = sorted({y for _, y in rows})
    t0 = time.time()
    out: dict[str, Any] = {"alpha": ALPHA, "delta": DELTA, "monitor_delta": MONITOR_DELTA, "spot_check_rate": SPOT_RATE,
                           "retrain_min_labels": MIN_LABELS, "first_monitor_delta": version_delta(MONITOR_DELTA, 1),
                           "python": sys.version.split()[0], "platform": platform.platform(), "scenarios": {}}
    lines = []
    for scenario in ("mix", "noise"):
        res = []
        for s in range(args.seeds if scenario == "mix" else max(1, args.seeds - 1)):
            r = run_seed(rows, labels, s, scenario, n1=args.n1, retrain=True)
            res.append(r)
            print(f"[{scenario} seed {s}] alarm after {r['checks_after_shift_to_alarm']} checks of the shifted traffic "
                  f"({r['requests_after_shift_to_alarm']} requests after the shift); before alarm "
                  f"{_pct(r['disagreement_before_alarm'])}; after promotion {_pct(r['disagreement_after_promotion'])} "
                  f"(promoted at {r['promoted_at']}); today {_pct(r['today_phase2'])}; {time.time() - t0:.0f}s",
                  flush=True)
        summary = {
            "seeds": len(res), "alarmed": sum(r["alarm_request"] is not None for r in res),
            "median_checks_to_alarm": _med([r["checks_to_alarm"] for r in res]),
            "median_checks_after_shift_to_alarm": _med([r["checks_after_shift_to_alarm"] for r in res]),
            "median_requests_after_shift_to_alarm": _med([r["requests_after_shift_to_alarm"] for r in res]),
            "median_disagreement_before_alarm": _med([r["disagreement_before_alarm"] for r in res]),
            "disagreement_during_suspension": 0.0,
            "promoted": sum(r["promoted_at"] is not None for r in res),
            "median_disagreement_after_promotion": _med([r["disagreement_after_promotion"] for r in res]),
            "median_today_phase2": _med([r["today_phase2"] for r in res]),
            "median_phase1": _med([r["first_version_risk_on_phase1"] for r in res]),
        }
        out["scenarios"][scenario] = {"summary": summary, "runs": res}
        lines.append(f"| {scenario} | {summary['alarmed']}/{summary['seeds']} | "
                     f"{summary['median_checks_after_shift_to_alarm']} ({summary['median_checks_to_alarm']}) | "
                     f"{summary['median_requests_after_shift_to_alarm']} | {_pct(summary['median_phase1'])} | "
                     f"{_pct(summary['median_disagreement_before_alarm'])} | 0 (teacher) | "
                     f"{summary['promoted']}/{summary['seeds']} | {_pct(summary['median_disagreement_after_promotion'])} | "
                     f"{_pct(summary['median_today_phase2'])} |")
    fa = unshifted(rows, labels, args.false_seeds, args.n1 + 1690)
    for f in fa[:3]:
        print(f"[none seed {f['seed']}] alarm: {f['alarmed']} after {f['checks']} checks; realised "
              f"{_pct(f['realised'])}", flush=True)
    n_alarm = sum(f["alarmed"] for f in fa)
    held = [f for f in fa if f["realised"] is not None and f["realised"] <= ALPHA]
    out["scenarios"]["none"] = {"seeds": len(fa), "alarms": n_alarm, "alarm_share": n_alarm / len(fa),
                                "alarms_where_risk_held": sum(f["alarmed"] for f in held), "seeds_where_risk_held":
                                len(held), "runs": fa}
    out["seconds"] = round(time.time() - t0, 1)
    head = ("| shift | alarmed | checks after the shift to alarm (all) | requests after shift | phase 1 | before alarm | "
            "suspended | promoted | after promotion | today (no action) |\n|---|---|---|---|---|---|---|---|---|---|")
    md = (f"# bench_drift (α = {ALPHA:.0%}, δ = {DELTA}, monitor_delta = {MONITOR_DELTA}, spot checks "
          f"{SPOT_RATE:.0%} of answers, retrain every {MIN_LABELS} shadow labels)\n\nRealised disagreement of the "
          f"student's answers with the teacher (medians over seeds).\n\n{head}\n" + "\n".join(lines) +
          f"\n\nUnshifted traffic ({len(fa)} seeds, {fa[0]['requests']} requests each): {n_alarm} alarm(s) "
          f"({n_alarm / len(fa):.1%}; bound monitor_delta = {MONITOR_DELTA:.0%}); "
          f"{out['scenarios']['none']['alarms_where_risk_held']} among the {len(held)} seeds whose realised risk "
          f"was ≤ α.\n")
    print()
    print(md)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1, default=float))
    args.json.with_suffix(".md").write_text(md)
    print(f"wrote {args.json} and {args.json.with_suffix('.md')} ({out['seconds']} s)")


if __name__ == "__main__":
    main()
