"""Multi-label student benchmark (issue 10, item 4): plain TF-IDF + one-vs-rest logistic
regression vs downsize's ``MultiLabelStudent``, side by side, on ``../shared/data/debtags-*``
(Debian package descriptions → debtags, 96 labels; the ``labels`` of each row play the teacher's).

Both models are fitted on the same 70 % of the train file; the other 30 % and the test file are
pooled, and each of ``--resplits`` random resplits draws a calibration set of the 30 %'s size
from the pool and tests on the rest. λ is set with the same Learn-then-Test rule for both
(``ThresholdCalibrator(alpha, delta=0.05, bound="hoeffding_bentkus")`` on the record loss of the
task kind: ``exact`` = 1 if the set differs, ``f1`` = 1 − F1 of the set). Printed per loss:
the mean share answered locally, the realised mean loss on the answered test rows and the share
of resplits where it stayed ≤ α, and batch prediction speed (rows/s of wall and of CPU time).

The **plain baseline**: ``TfidfVectorizer(sublinear_tf=True, min_df=2)`` on words,
``OneVsRestClassifier(LogisticRegression())`` (scikit-learn defaults), the set
``{label : p ≥ ½}`` and the record confidence ``Π_j max(p_j, 1 − p_j)`` (the probability of that
set if labels were independent), for both losses.

    python benchmarks/bench_multilabel.py [--resplits 100] [--alphas 0.05 0.1] [--models plain tfidf minilm]
                                          [--params JSON] [--speed]

Writes benchmarks/results/multilabel-debtags.json. Timings depend on the machine's load.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from downsize.calibration import ThresholdCalibrator
from downsize.errors import CalibrationError
from downsize.students import MultiLabelStudent
from downsize.tasks.multilabel import set_f1

_HERE = Path(__file__).resolve()
SHARED = next((p / "shared" / "data" for p in _HERE.parents[1:4] if (p / "shared" / "data").is_dir()),
              _HERE.parents[1].parent / "shared" / "data")
RESULTS = _HERE.parent / "results"
DELTA = 0.05


def load(split: str) -> list[dict]:
    path = SHARED / f"debtags-{split}.jsonl.gz"
    if not path.exists():
        sys.exit(f"{path} not found: the benchmark reads the full data from ../shared/data")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


class PlainOvR:
    """TF-IDF + one-vs-rest logistic regression; set = {p ≥ ½}; confidence = Π max(p, 1 − p)."""

    def fit(self, texts: list[str], sets: list[list[str]]) -> PlainOvR:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.preprocessing import MultiLabelBinarizer

        self.mlb = MultiLabelBinarizer().fit(sets)
        self.vec = TfidfVectorizer(sublinear_tf=True, min_df=2)
        self.clf = OneVsRestClassifier(LogisticRegression(max_iter=1000)).fit(
            self.vec.fit_transform(texts), self.mlb.transform(sets))
        return self

    def predict_with_confidence(self, texts: list[str], *, loss: str) -> tuple[list[tuple], np.ndarray]:
        P = self.clf.predict_proba(self.vec.transform(texts))
        M = P >= 0.5
        conf = np.exp(np.log(np.clip(np.where(M, P, 1 - P), 1e-12, 1)).sum(1))
        return [tuple(sorted(self.mlb.classes_[m])) for m in M], conf


def losses(answers: list[tuple], refs: list[tuple], loss: str) -> np.ndarray:
    if loss == "exact":
        return np.array([float(set(a) != set(r)) for a, r in zip(answers, refs)])
    return np.array([1.0 - set_f1(a, r) for a, r in zip(answers, refs)])


def resplits(conf: np.ndarray, loss: np.ndarray, n_cal: int, alpha: float, n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    held, covs, risks, none = 0, [], [], 0
    for _ in range(n):
        perm = rng.permutation(len(conf))
        c, t = perm[:n_cal], perm[n_cal:]
        try:
            cal = ThresholdCalibrator(alpha=alpha, delta=DELTA, bound="hoeffding_bentkus").fit(conf[c], loss=loss[c])
            thr = cal.threshold_
        except CalibrationError:
            thr = None
        if thr is None:
            none += 1
            held += 1
            covs.append(0.0)
            continue
        ans = conf[t] >= thr
        risk = float(loss[t][ans].mean()) if ans.any() else 0.0
        covs.append(float(ans.mean()))
        risks.append(risk)
        held += risk <= alpha
    return {"resplits": n, "answered_mean": float(np.mean(covs)), "answered_min": float(np.min(covs)),
            "held_share": held / n, "no_threshold": none,
            "realised_mean": float(np.mean(risks)) if risks else None,
            "realised_max": float(np.max(risks)) if risks else None}


def make(model: str, params: dict):
    if model == "plain":
        return PlainOvR()
    return MultiLabelStudent(features=model, **params)


def speed(model, texts: list[str], loss: str, repeats: int = 3) -> dict:
    """The first batch call after a 200-text warm-up (lazy loads), and the best of ``repeats``
    more (what a server or a chunked batch job sees once running)."""
    model.predict_with_confidence(texts[:200], loss=loss)
    runs = []
    for _ in range(1 + repeats):
        w, c = time.perf_counter(), time.process_time()
        model.predict_with_confidence(texts, loss=loss)
        runs.append((time.perf_counter() - w, time.process_time() - c))
    best = min(runs[1:] or runs)
    return {"rows": len(texts), "rows_per_s_wall": len(texts) / best[0], "rows_per_cpu_s": len(texts) / best[1],
            "first_rows_per_s_wall": len(texts) / runs[0][0], "load_avg": os.getloadavg()[0]}


def speed_table(m, plain, texts: list[str]) -> dict:
    """Side by side: the plain baseline, downsize in one thread, downsize on every core."""
    from downsize.students import _threads

    out = {"plain": {loss: speed(plain, texts, loss) for loss in ("exact", "f1")}}
    cores = _threads.cores
    _threads.cores = lambda: 1
    try:
        out["downsize_one_thread"] = {loss: speed(m, texts, loss) for loss in ("exact", "f1")}
    finally:
        _threads.cores = cores
    out["downsize"] = {loss: speed(m, texts, loss) for loss in ("exact", "f1")}
    out["cores"] = cores()
    for name in ("plain", "downsize_one_thread", "downsize"):
        print(f"{name:>20}: " + "; ".join(
            f"{loss} {r['rows_per_s_wall']:,.0f} rows/s steady (first call {r['first_rows_per_s_wall']:,.0f}), "
            f"{r['rows_per_cpu_s']:,.0f} rows/CPU-s" for loss, r in out[name].items()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resplits", type=int, default=100)
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.05, 0.10])
    ap.add_argument("--models", nargs="+", default=["plain", "tfidf"], choices=["plain", "tfidf", "minilm"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--params", type=json.loads, default={},
                    help='MultiLabelStudent parameters as JSON, e.g. \'{"word_ngrams": [1, 1]}\'')
    ap.add_argument("--speed", action="store_true",
                    help="only time batch prediction (the plain baseline; the tfidf student, fitted with "
                         "calibration_cv=2, which changes its confidence model, not its cost, in one thread "
                         "and on every core) into multilabel-speed.json")
    args = ap.parse_args()

    train, test = load("train"), load("test")
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(train))
    n_fit = int(0.7 * len(train))
    fit_rows = [train[i] for i in perm[:n_fit]]
    pool = [train[i] for i in perm[n_fit:]] + test
    n_cal = len(train) - n_fit
    X_fit, Y_fit = [r["text"] for r in fit_rows], [r["labels"] for r in fit_rows]
    X_pool, Y_pool = [r["text"] for r in pool], [tuple(sorted(r["labels"])) for r in pool]
    if args.speed:
        t0 = time.perf_counter()
        m = MultiLabelStudent(features="tfidf", calibration_cv=2).fit(X_fit, Y_fit)
        fit_s = time.perf_counter() - t0
        plain = PlainOvR().fit(X_fit, Y_fit)
        res = {"fit_seconds": fit_s, "n_fit": n_fit, **speed_table(m, plain, X_pool)}
        (RESULTS / "multilabel-speed.json").write_text(json.dumps(res, indent=2) + "\n")
        return
    out: dict = {"dataset": "debtags", "n_fit": n_fit, "n_cal": n_cal, "n_pool": len(pool), "delta": DELTA,
                 "bound": "hoeffding_bentkus", "params": args.params, "models": {}}
    for model in args.models:
        t0 = time.perf_counter()
        m = make(model, {k: tuple(v) if isinstance(v, list) else v for k, v in args.params.items()}).fit(X_fit, Y_fit)
        row: dict = {"fit_seconds": time.perf_counter() - t0, "losses": {}}
        for loss in ("exact", "f1"):
            answers, conf = m.predict_with_confidence(X_pool, loss=loss)
            lo = losses(answers, Y_pool, loss)
            row["losses"][loss] = {"mean_loss_all": float(lo.mean()),
                                   **{f"alpha={a:g}": resplits(conf, lo, n_cal, a, args.resplits, args.seed)
                                      for a in args.alphas}}
        row["speed"] = speed(m, X_pool, "f1")
        out["models"][model] = row
        print(f"{model}: fitted in {row['fit_seconds']:.0f} s", flush=True)

    print(f"\ndebtags: fit {n_fit}, calibrate {n_cal} (redrawn from a pool of {len(pool)}), "
          f"{args.resplits} resplits, δ={DELTA}, Hoeffding-Bentkus")
    head = f"{'loss':6} {'α':>5} " + "".join(f"{m + ' answered':>18} {'≤α':>6} {'realised':>9}" for m in args.models)
    print(head)
    for loss in ("exact", "f1"):
        for a in args.alphas:
            cells = ""
            for model in args.models:
                r = out["models"][model]["losses"][loss][f"alpha={a:g}"]
                real = "-" if r["realised_mean"] is None else f"{r['realised_mean']:.3f}"
                cells += f"{r['answered_mean']:>18.1%} {r['held_share']:>6.0%} {real:>9}"
            print(f"{loss:6} {a:>5.0%} {cells}")
    print("speed (batch of the pool, f1): " + "; ".join(
        f"{m}: {out['models'][m]['speed']['rows_per_s_wall']:,.0f} rows/s wall, "
        f"{out['models'][m]['speed']['rows_per_cpu_s']:,.0f} rows/CPU-s" for m in args.models))
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if args.models == ["plain", "tfidf"] else "-" + "-".join(args.models)
    suffix += "".join(f"-{k}={v}" for k, v in args.params.items()).replace(" ", "")
    path = RESULTS / f"multilabel-debtags{suffix}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
