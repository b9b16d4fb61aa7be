"""Calibration rules over random resplits (issue 11 item 5): what each certifies, and whether the
guarantee holds.

For each data set (the full Rotten Tomatoes and Reuters R8 of ../shared/data, train + test pooled,
the labels playing the teacher) and each of ``--resplits`` random resplits:

* 20 % of the pool is held out as the *test* traffic; the rest, L, is the labelled data;
* L is cut into K = 3 stratified folds; fold model j (the tfidf student's own model on features
  cached once per data set, with ``calibration_cv=2`` to halve the fits) is fitted on L minus fold j and scores fold j (out-of-fold) and the
  test set; a *refit* model is fitted on all of L and scores the test set.

Protocols (each with every rule: ``fixed_sequence`` = today's, ``learned_start``, ``holm``,
``bonferroni`` over a 20-point coverage grid; bound: the task default ``hoeffding_bentkus`` and the
exact ``binomial``):

``split``
    Today's pipeline: fit on 2/3 of L (fold model 0), calibrate on the held-out 1/3, serve that model.
``crossfit``
    Calibrate on the out-of-fold scores of *all* of L (every label used for calibration), serve the
    refit model with that threshold. The realised risk on the test set is that of the refit model.

Reported per (data set, α, protocol, rule, bound): mean test coverage (answered locally) and its
spread, mean realised disagreement on the answered test rows, and the share of resplits with
realised ≤ α (the guarantee asks ≥ 1 − δ = 95 %).

The tfidf features (word + char n-grams, the student's vectorizers) are fitted once on the pooled
texts (unsupervised: no label is used) and the per-resplit scores are cached in
``benchmarks/.cache/`` so that re-running with other rules costs seconds.

    nice -n 10 python benchmarks/bench_calibration.py [--resplits 50] [--datasets rotten_tomatoes reuters_r8]

Writes benchmarks/results/calibration.json (and prints the table).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from downsize.calibration import ThresholdCalibrator
from downsize.data import read_texts
from downsize.errors import CalibrationError

SHARED = Path(__import__("os").environ.get("DOWNSIZE_SHARED_DATA", "/work/shared/data"))
RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(__file__).resolve().parent / ".cache"
ALPHAS = {"rotten_tomatoes": (0.02, 0.05, 0.10), "reuters_r8": (0.01, 0.02, 0.05)}
RULES = ("fixed_sequence", "learned_start", "holm", "bonferroni")
BOUNDS = ("hoeffding_bentkus", "binomial")
DELTA, K, TEST_SHARE = 0.05, 3, 0.2
CAL_CV = 2  # the student's calibration_cv (default 5): 2 halves the fits, so 50 resplits take minutes


def _pool(name: str) -> tuple[list[str], np.ndarray]:
    tr, te = SHARED / f"{name}-train.csv.gz", SHARED / f"{name}-test.csv.gz"
    if not tr.exists():
        sys.exit(f"{tr} not found: the benchmark reads the full data from ../shared/data")
    a, b = read_texts(tr, label_col="label"), read_texts(te, label_col="label")
    return a.texts + b.texts, np.asarray((a.labels or []) + (b.labels or []), dtype=object)


def _features(texts: list[str]):
    import scipy.sparse as sp

    from downsize.students.tfidf import TfidfStudent

    vecs = TfidfStudent()._make_vectorizers()
    return sp.hstack([v.fit_transform(texts) for v in vecs.values()], format="csr")


def _fit_scores(F, y, fit_idx, score_idx: list[np.ndarray], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The tfidf student's classifier (LinearSVC, temperature scaling; ``calibration_cv=CAL_CV``) on cached features."""
    from sklearn.svm import LinearSVC

    from downsize.students.base import calibrated

    m = calibrated(LinearSVC(C=0.5, random_state=seed), "temperature", CAL_CV, seed).fit(F[fit_idx], y[fit_idx])
    out = []
    for idx in score_idx:
        p = m.predict_proba(F[idx])
        out.append((p.max(1), (m.classes_[p.argmax(1)] != y[idx]).astype(float)))
    return out


def scores(name: str, resplits: int) -> list[dict[str, np.ndarray]]:
    """Per resplit: split (fold-0 cal/test), crossfit (OOF of L / refit on test) confidences and losses."""
    from sklearn.model_selection import StratifiedKFold

    path = CACHE / f"calibration-{name}-{resplits}.npz"
    if path.exists():  # all resplits of an earlier run in one file
        z = np.load(path)
        return [{k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(f"{r}/")} for r in range(resplits)]
    CACHE.mkdir(exist_ok=True)
    one = [CACHE / f"calibration-{name}-r{r}.npz" for r in range(resplits)]
    todo = [r for r in range(resplits) if not one[r].exists()]
    if todo:
        texts, y = _pool(name)
        t0 = time.perf_counter()
        F = _features(texts)
        print(f"{name}: {len(texts):,} texts, {F.shape[1]:,} features in {time.perf_counter() - t0:.0f} s", flush=True)
    for r in todo:  # each resplit is cached as soon as it is done: an interrupted run resumes
        t0 = time.perf_counter()
        rng = np.random.default_rng(1000 + r)
        perm = rng.permutation(len(texts))
        n_test = int(TEST_SHARE * len(texts))
        test, L = perm[:n_test], perm[n_test:]
        folds = list(StratifiedKFold(K, shuffle=True, random_state=r).split(L, y[L]))
        oof_c, oof_l = np.empty(len(L)), np.empty(len(L))
        rec: dict[str, np.ndarray] = {}
        for j, (fit_pos, out_pos) in enumerate(folds):
            (c, l), (tc, tl) = _fit_scores(F, y, L[fit_pos], [L[out_pos], test], r)
            oof_c[out_pos], oof_l[out_pos] = c, l
            if j == 0:
                rec.update(split_cal_c=c, split_cal_l=l, split_test_c=tc, split_test_l=tl)
        ((rc, rl),) = _fit_scores(F, y, L, [test], r)
        rec.update(cross_cal_c=oof_c, cross_cal_l=oof_l, cross_test_c=rc, cross_test_l=rl)
        np.savez_compressed(one[r], **rec)
        print(f"  resplit {r + 1}/{resplits} in {time.perf_counter() - t0:.0f} s", flush=True)
    return [dict(np.load(f)) for f in one]


def cached(name: str) -> list[dict[str, np.ndarray]]:
    """The resplits already cached for ``name`` (a run still going, or interrupted)."""
    files = sorted(CACHE.glob(f"calibration-{name}-r*.npz"), key=lambda f: int(f.stem.rsplit("-r", 1)[1]))
    return [dict(np.load(f)) for f in files]


def evaluate(recs: list[dict[str, np.ndarray]], alpha: float) -> list[dict]:
    rows = []
    for proto, pre in (("split", "split"), ("crossfit", "cross")):
        for bound in BOUNDS:
            for rule in RULES:
                cov, cal_cov, risk, held = [], [], [], 0
                for rec in recs:
                    try:
                        cal = ThresholdCalibrator(alpha=alpha, delta=DELTA, bound=bound, method=rule).fit(
                            rec[f"{pre}_cal_c"], loss=rec[f"{pre}_cal_l"])
                        thr = cal.threshold_
                    except CalibrationError:
                        thr = None
                    ans = (np.zeros(len(rec[f"{pre}_test_c"]), bool) if thr is None
                           else rec[f"{pre}_test_c"] >= thr)
                    r = float(rec[f"{pre}_test_l"][ans].mean()) if ans.any() else 0.0
                    cov.append(float(ans.mean()))
                    cal_cov.append(0.0 if thr is None else cal.coverage_)
                    risk.append(r)
                    held += r <= alpha
                rows.append({"alpha": alpha, "protocol": proto, "bound": bound, "rule": rule,
                             "coverage_mean": float(np.mean(cov)), "coverage_sd": float(np.std(cov)),
                             "coverage_p10": float(np.percentile(cov, 10)),
                             "calib_coverage_mean": float(np.mean(cal_cov)),
                             "risk_mean": float(np.mean(risk)), "risk_max": float(np.max(risk)),
                             "held_share": held / len(recs), "resplits": len(recs)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resplits", type=int, default=50)
    ap.add_argument("--datasets", nargs="+", default=list(ALPHAS))
    ap.add_argument("--cached", action="store_true", help="evaluate only the resplits already cached")
    args = ap.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    out_path = RESULTS / "calibration.json"
    result = json.loads(out_path.read_text()) if out_path.exists() else {}
    for name in args.datasets:
        t0 = time.perf_counter()
        recs = scores(name, args.resplits) if not args.cached else cached(name)
        rows = [row for a in ALPHAS[name] for row in evaluate(recs, a)]
        result = json.loads(out_path.read_text()) if out_path.exists() else {}  # another run may have written
        result[name] = {"resplits": len(recs), "delta": DELTA, "folds": K, "test_share": TEST_SHARE,
                        "seconds": time.perf_counter() - t0, "calibration_cv": CAL_CV, "rows": rows}
        print(f"\n{name} ({len(recs)} resplits, δ = {DELTA}; coverage = share of test traffic answered "
              "locally, held = share of resplits with realised ≤ α)")
        print(f"{'α':>5} {'protocol':9} {'bound':18} {'rule':15} {'coverage':>16} {'p10':>6} {'realised':>9} "
              f"{'max':>6} {'held':>6}")
        for r in rows:
            print(f"{r['alpha']:5.0%} {r['protocol']:9} {r['bound']:18} {r['rule']:15} "
                  f"{r['coverage_mean']:7.1%} ± {r['coverage_sd']:5.1%} {r['coverage_p10']:6.1%} "
                  f"{r['risk_mean']:9.2%} {r['risk_max']:6.2%} {r['held_share']:6.0%}")
        out_path.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
