"""Simulated spot-check and confidence streams through downsize.monitor (issue 12).

(a) unshifted spot-check streams (true loss rate α and α/2): share of seeds that ever alarm,
    which Ville's inequality bounds by monitor_delta; (b) shifted streams (α/2, then 2α or 3α
    from check 500, and from check 5,000 after a long calm period): checks until the alarm;
    (c) the naive baselines — a one-sided exact binomial test at level δ re-run after every
    check, on all checks so far or on a sliding window of 500 — side by side in both tables;
    (d) the drift warning on confidence streams that shift or do not, with the "fixed
    reference" shortcut beside it. Every stream goes through the monitors' own kernels
    (``downsize.monitor._bets`` / ``_conformal``), vectorised over seeds. If ``mapie`` is
    importable and ``--mapie-seeds N`` is given, MAPIE's ``RiskMonitoring`` is run on N seeds
    of (b) too (the committed results used N = 20).

    python benchmarks/bench_monitor.py [--seeds 2000] [--quick] [--mapie-seeds N] [--json OUT]

Writes benchmarks/results/monitor.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from scipy import stats

from downsize.monitor import DriftMonitor, RiskMonitor
from downsize.monitor._bets import STRATEGIES, default_half_life
from downsize.monitor._conformal import BINS, Jumper, sequential_pvalues, to_bins, uniforms

HERE = Path(__file__).resolve().parent
DELTA = 0.05
ALPHAS = (0.02, 0.05)
WINDOW = 500

#: name -> (strategy, half_life factory)
METHODS = {
    "mixture of the next and ons (default)": ("mixture", default_half_life),
    "agrapa, half-life 2/α": ("agrapa", default_half_life),
    "agrapa, no forgetting (WSR 2023)": ("agrapa", lambda a: math.inf),
    "ons": ("ons", lambda a: math.inf),
    "binomial test after every check": ("binomial", None),
    f"binomial on last {WINDOW}, every check": ("window", None),
}


def first_hit(ok: np.ndarray) -> np.ndarray:
    """1-based index of the first True per row, -1 if none."""
    return np.where(ok.any(1), ok.argmax(1) + 1, -1)


def alarms(X: np.ndarray, alpha: float, kind: str, half_life: float | None) -> np.ndarray:
    """First alarm (1-based check) of each stream (rows of X), -1 if none."""
    S, T = X.shape
    if kind == "binomial":
        n = np.arange(1, T + 1)
        crit = stats.binom.ppf(1 - DELTA, n, alpha) + 1  # smallest k with P(Bin ≥ k) ≤ δ
        return first_hit(np.cumsum(X, 1) >= crit)
    if kind == "window":
        crit = stats.binom.ppf(1 - DELTA, WINDOW, alpha) + 1
        c = np.cumsum(X, 1)
        win = c[:, WINDOW - 1:] - np.concatenate([np.zeros((S, 1)), c[:, :-WINDOW]], 1)
        hit = first_hit(win >= crit)
        return np.where(hit > 0, hit + WINDOW - 1, -1)
    bettor = STRATEGIES[kind](alpha, half_life)
    st, logw, out = bettor.init((S,)), np.zeros(S), np.full(S, -1)
    thr = math.log(1 / DELTA)
    for t in range(T):
        x = X[:, t]
        logw += np.log1p(bettor.bet(st) * (x - alpha))
        out[(out < 0) & (logw >= thr)] = t + 1
        st = bettor.learn(st, x)
    return out


def streams(rng: np.random.Generator, S: int, T: int, pre: float, post: float, at: int) -> np.ndarray:
    p = np.full(T, pre)
    p[at:] = post
    return (rng.random((S, T)) < p).astype(float)


def cp(k: int, n: int) -> list[float]:
    lo = stats.beta.ppf(0.025, k, n - k + 1) if k else 0.0
    hi = stats.beta.ppf(0.975, k + 1, n - k) if k < n else 1.0
    return [round(float(lo), 4), round(float(hi), 4)]


def kl(q: float, a: float) -> float:
    return q * math.log(q / a) + (1 - q) * math.log((1 - q) / (1 - a))


def false_alarms(rng: np.random.Generator, S: int, T: int) -> list[dict]:
    rows = []
    for alpha in ALPHAS:
        for rate_name, rate in (("α", alpha), ("α/2", alpha / 2)):
            X = streams(rng, S, T, rate, rate, 0)
            for name, (kind, hl) in METHODS.items():
                hit = alarms(X, alpha, kind, hl(alpha) if hl else None)
                k = int((hit > 0).sum())
                rows.append({"alpha": alpha, "rate": rate_name, "method": name, "seeds": S,
                             "checks": T, "ever_alarm": k / S, "ci95": cp(k, S)})
    return rows


#: (rate before, as a multiple of α; after; first check at the new rate)
SHIFTS = ((0.5, 2, 500), (0.5, 3, 500), (0.5, 2, 5000), (0.5, 3, 5000), (2, 2, 0))


def detections(rng: np.random.Generator, S: int, after: int) -> list[dict]:
    rows = []
    for alpha in ALPHAS:
        for pre, mult, at in SHIFTS:
            X = streams(rng, S, at + after, pre * alpha, mult * alpha, at)
            oracle = math.log(1 / DELTA) / kl(mult * alpha, alpha)
            shift = (f"α/2 → {mult}α at check {at}" if at else f"{mult}α from check 1")
            for name, (kind, hl) in METHODS.items():
                hit = alarms(X, alpha, kind, hl(alpha) if hl else None)
                late = hit > at
                delay = np.where(late, hit - at, np.inf)
                rows.append({
                    "alpha": alpha, "shift": shift, "method": name,
                    "seeds": S, "before_shift": float(((hit > 0) & (hit <= at)).mean()),
                    "detected": float(late.mean()), "median": _q(delay, 50), "p90": _q(delay, 90),
                    "oracle": round(oracle)})
    return rows


def _q(d: np.ndarray, q: float) -> float | None:
    v = float(np.percentile(d, q, method="higher"))
    return None if math.isinf(v) else v


def mapie_rows(rng: np.random.Generator, S: int, at: int = 500, after: int = 2500) -> list[dict]:
    """MAPIE's RiskMonitoring(threshold=α) on a few seeds (its bound is O(n) per update)."""
    try:
        from mapie.exchangeability_testing import RiskMonitoring
    except ImportError:
        return []
    rows = []
    for alpha in ALPHAS:
        for mult in (2, 3):
            X = streams(rng, S, at + after, alpha / 2, mult * alpha, at)
            hit = []
            for x in X.astype(int):
                # test_level 2δ: half goes to a reference bound we do not use, so online level δ
                m = RiskMonitoring(risk="accuracy", test_level=2 * DELTA, threshold=alpha, warn=False)
                m.update(np.zeros(x.size, int), x)
                ok = m.online_risk_lower_bound_sequence_history > alpha
                hit.append(int(ok.argmax()) + 1 if ok.any() else -1)
            hit = np.array(hit)
            delay = np.where(hit > at, hit - at, np.inf)
            rows.append({"alpha": alpha, "shift": f"α/2 → {mult}α at check {at}",
                         "method": "MAPIE RiskMonitoring (CM-EB bound)", "seeds": S,
                         "before_shift": float(((hit > 0) & (hit <= at)).mean()),
                         "detected": float((hit > at).mean()), "median": _q(delay, 50),
                         "p90": _q(delay, 90), "oracle": round(math.log(1 / DELTA) / kl(mult * alpha, alpha))})
    x = (rng.random(3000) < 0.03).astype(int)
    m = RiskMonitoring(risk="accuracy", test_level=2 * DELTA, threshold=0.05, warn=False)
    m.update(np.zeros(2999, int), x[:-1])
    t0 = time.perf_counter()
    m.update(np.zeros(1, int), x[-1:])
    rows.append({"mapie_update_s_at_3000_checks": round(time.perf_counter() - t0, 3)})
    return rows


# -- drift ---------------------------------------------------------------------------------
def confidences(rng: np.random.Generator, shape: tuple[int, ...], shift: float = 0.0,
                hard: float = 0.0) -> np.ndarray:
    """A student's confidence: logistic of N(2.5 + shift, 1.5); a share ``hard`` of the
    traffic comes from a hard population, logistic of N(0, 1)."""
    z = rng.normal(2.5 + shift, 1.5, shape)
    m = rng.random(shape) < hard
    z[m] = rng.normal(0.0, 1.0, int(m.sum()))
    return 1.0 / (1.0 + np.exp(-z))


DRIFTS = {"none": (0.0, 0.0), "harder: logit mean −0.6": (-0.6, 0.0),
          "10 % of traffic hard": (0.0, 0.10), "25 % of traffic hard": (0.0, 0.25),
          "easier: logit mean +0.5": (0.5, 0.0)}


def simple_jumper(P: np.ndarray, jump: float = 0.01) -> np.ndarray:
    """Log-martingale paths of Vovk's simple jumper with experts ε ∈ {−1, 0, 1}, as in MAPIE's
    ``OnlineMartingaleTest.update_simple_jumper_martingale`` (default ``jump_size=0.01``)."""
    eps = np.array([-1.0, 0.0, 1.0])
    w, logm, out = np.full((P.shape[0], 3), 1 / 3), np.zeros(P.shape[0]), np.empty(P.shape)
    for t in range(P.shape[1]):
        w = ((1 - jump) * w + jump / 3) * (1 + eps * (P[:, t:t + 1] - 0.5))
        tot = w.sum(1)
        logm += np.log(tot)
        w /= tot[:, None]
        out[:, t] = logm
    return out


def drift_rows(rng: np.random.Generator, S_null: int, S_shift: int) -> list[dict]:
    rows = []
    thr = math.log(1 / DELTA)
    cases = [(k, v, 2000, 4000, 0 if k == "none" else 1000) for k, v in DRIFTS.items()]
    cases.append(("none, long life", (0.0, 0.0), 300, 10000, 0))
    for name, (shift, hard), n_ref, T, at in cases:
        S = S_null if shift == hard == 0 else S_shift
        ref = confidences(rng, (S, n_ref))
        live = np.concatenate([confidences(rng, (S, at)),
                               confidences(rng, (S, T - at), shift, hard)], 1)
        counts = np.zeros((S, BINS), np.int64)
        np.add.at(counts, (np.repeat(np.arange(S), n_ref), to_bins(ref).ravel()), 1)
        seeds = np.arange(S, dtype=np.uint64)[:, None]
        lb = to_bins(live)
        p_seq, _ = sequential_pvalues(counts, lb, seeds)
        below = np.take_along_axis(np.cumsum(counts, 1) - counts, lb, 1)
        equal = np.take_along_axis(counts, lb, 1)
        p_fix = (below + uniforms(seeds, np.arange(T)) * (equal + 1.0)) / (n_ref + 1.0)
        for variant, P in (("conformal martingale (default)", p_seq),
                           ("fixed reference (shortcut)", p_fix),
                           ("jumper ε∈{−1,0,1} only (MAPIE's)", p_seq)):
            if variant.startswith("fixed") and not name.startswith("none"):
                continue
            if variant.startswith("jumper"):
                if name.startswith("none, long"):
                    continue
                hit = first_hit(simple_jumper(P) >= thr)
            else:
                jumper = Jumper()
                st, hit = jumper.init((S,)), np.full(S, -1)
                for t in range(T):
                    st = jumper.step(st, P[:, t])
                    hit[(hit < 0) & (st["logm"] >= thr)] = t + 1
            k = int((hit > 0).sum())
            delay = np.where(hit > at, hit - at, np.inf)
            rows.append({"traffic": name, "variant": variant, "seeds": S, "reference": n_ref,
                         "live": T, "shift_at": at if at else None,
                         "before_shift": k / S if not at else float(((hit > 0) & (hit <= at)).mean()),
                         "ci95": cp(k, S) if not at else None,
                         "detected": float((hit > at).mean()) if at else None,
                         "median": _q(delay, 50) if at else None, "p90": _q(delay, 90) if at else None})
    return rows


def speed() -> dict:
    rng = np.random.default_rng(0)
    x = (rng.random(5000) < 0.03).astype(float)
    t = time.perf_counter()
    mon = RiskMonitor.replay(x, 0.05, DELTA)
    risk_us = (time.perf_counter() - t) / x.size * 1e6
    t = time.perf_counter()
    RiskMonitor.from_dict(json.loads(json.dumps(mon.to_dict())))
    restore_ms = (time.perf_counter() - t) * 1e3
    ref, live = confidences(rng, (2000,)), confidences(rng, (20000,))
    d = DriftMonitor(ref, DELTA)
    t = time.perf_counter()
    for c in live[:5000].tolist():
        d.update(c)
    drift_us = (time.perf_counter() - t) / 5000 * 1e6
    t = time.perf_counter()
    DriftMonitor.replay(ref, live, DELTA)
    replay_us = (time.perf_counter() - t) / live.size * 1e6
    return {"risk_update_us": round(risk_us, 1), "risk_restore_ms": round(restore_ms, 2),
            "risk_state_json_bytes": len(json.dumps(mon.to_dict())),
            "drift_update_us": round(drift_us, 1), "drift_replay_us_per_row": round(replay_us, 1),
            "drift_state_json_bytes": len(json.dumps(d.to_dict()))}


def _fmt(v: float | None) -> str:
    return "never" if v is None else f"{v:,.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=2000, help="seeds of the false-alarm table")
    ap.add_argument("--quick", action="store_true", help="fewer seeds, for a smoke run")
    ap.add_argument("--mapie-seeds", type=int, default=0,
                    help="also run MAPIE's RiskMonitoring on this many seeds (~1 s each; needs mapie)")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "monitor.json")
    args = ap.parse_args(argv)
    S_fa = 200 if args.quick else args.seeds
    S_det = 100 if args.quick else 400
    rng = np.random.default_rng(20240612)
    t0 = time.perf_counter()

    fa = false_alarms(rng, S_fa, 5000)
    print(f"(a, c) Unshifted streams of 5,000 checks, monitor_delta = {DELTA}: share of {S_fa} "
          "seeds that EVER alarm (must be ≤ δ) [95 % Clopper-Pearson]")
    for r in fa:
        print(f"  α={r['alpha']:.2f} rate {r['rate']:>3}  {r['method']:38s} "
              f"{r['ever_alarm']:6.3f}  [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]")

    det = detections(rng, S_det, 2500)
    if args.mapie_seeds:
        det += mapie_rows(rng, args.mapie_seeds)
    print(f"\n(b, c) Shifted streams ({S_det} seeds): checks from the shift to the alarm "
          "(median / p90), share alarmed before the shift, share detected within 2,500; "
          "oracle = log(1/δ)/KL, what a test that knew the new rate would need on average")
    for r in det:
        if "method" not in r:
            print(f"  MAPIE: one update at 3,000 checks takes {r['mapie_update_s_at_3000_checks']} s")
            continue
        print(f"  α={r['alpha']:.2f} {r['shift']:26s} {r['method']:38s} {_fmt(r['median']):>6} / "
              f"{_fmt(r['p90']):>6}   early {r['before_shift']:.3f}   detected {r['detected']:.2f}"
              f"   oracle {r['oracle']}")

    dr = drift_rows(rng, 200 if args.quick else 1500, 100 if args.quick else 300)
    print(f"\n(d) Drift warning, δ = {DELTA}: confidences of a student, 2,000 calibration rows, "
          "4,000 live requests, shift at request 1,000 (none: share that ever warns)")
    for r in dr:
        if r["shift_at"] is None:
            print(f"  {r['traffic']:26s} {r['variant']:34s} ref {r['reference']:>5} live "
                  f"{r['live']:>6}: warns {r['before_shift']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]")
        else:
            print(f"  {r['traffic']:26s} {r['variant']:34s} {_fmt(r['median']):>6} / "
                  f"{_fmt(r['p90']):>6} requests   early {r['before_shift']:.3f}   "
                  f"detected {r['detected']:.2f}")

    sp = speed()
    print("\nSpeed (busy shared machine): " + ", ".join(f"{k} {v}" for k, v in sp.items()))
    elapsed = time.perf_counter() - t0
    print(f"total {elapsed:.1f} s")
    try:
        mapie = version("mapie") if args.mapie_seeds else None
    except PackageNotFoundError:
        mapie = None
    out = {"delta": DELTA, "mapie": mapie, "false_alarms": fa, "detection": det, "drift": dr, "speed": sp,
           "seconds": round(elapsed, 1), "python": sys.version.split()[0],
           "machine": platform.machine(), "quick": args.quick}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
