"""Extraction student benchmark (issue 10, item 4): plain CRF vs TaggerStudent, side by side.

On ``../shared/data/us_addresses-*`` (29 fields) and ``person_names-*`` (12 fields); the
``fields`` of each row play the teacher's answers (``spans`` are never trained on). For each
model, two ways to set λ with the same Learn-then-Test rule
(``ThresholdCalibrator(alpha, delta=0.05, bound="hoeffding_bentkus")``, ``correct`` = the
answer equals the teacher's, i.e. ``exact`` loss):

* **split**: fit on 70 % of the train file, calibrate on the other 30 %, answer the test file;
  100 resplits redraw calibration/test rows from the pooled held-out rows (as
  ``bench_cascade.resplits``);
* **cross-fitted**: 5-fold out-of-fold confidences on the whole train file calibrate λ, the
  model refitted on all of it answers the test file; the resplits pool the out-of-fold and
  the test rows (each scored by a model that did not see it; the fold models saw 80 % of the
  train file, the final one all of it, so the pool is only nearly exchangeable) and redraw a
  calibration set of the train file's size;
* **own_oof** (the tagger only): as cross-fitted, but λ is set on the out-of-fold confidences
  the tagger computes anyway for its stacked confidence (``oof_confidence_``), so cross-fitting
  costs no extra training.

The **plain baseline** is a linear-chain CRF (crfsuite, c1 = c2 = 0.1, 100 iterations) with the
standard token features (lower-cased word, isupper / istitle / isdigit, 3-letter suffix, the
same for the ±1 neighbours), BIO tags, record confidence = probability of the Viterbi path.
Both models use the same tokens, alignment and decoding (``downsize.students.tagger.spans``).

    python benchmarks/bench_extract.py [--datasets us_addresses person_names] [--resplits 100]
                                       [--models plain tagger tagger-answer] [--speed]

Writes benchmarks/results/extract-<dataset>.json (-<models>.json for other models than the
default two). ``tagger-answer`` is the ablation whose confidence is the CRF's probability of
the answer instead of the stacked one. Timings depend on the machine's load; ``--speed`` only
trains once and times batch prediction, in wall time and per CPU-second of the process (which
load distorts less), into extract-speed.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from downsize.students.tagger.align import align_fields
from downsize.students.tagger.spans import EdgeRule, decode_fields, normalise_record, tokenize
from downsize.students.tagger import TaggerStudent, same_answer
from downsize.calibration import ThresholdCalibrator
from downsize.errors import CalibrationError

_HERE = Path(__file__).resolve()
# ../shared/data beside the repository (also from a worktree one level further down)
SHARED = next((p / "shared" / "data" for p in _HERE.parents[1:4] if (p / "shared" / "data").is_dir()),
              _HERE.parents[1].parent / "shared" / "data")
RESULTS = Path(__file__).resolve().parent / "results"
ALPHAS = (0.05, 0.10)
DELTA = 0.05


def load(name: str, split: str) -> list[dict]:
    path = SHARED / f"{name}-{split}.jsonl.gz"
    if not path.exists():
        sys.exit(f"{path} not found: the benchmark reads the full data from ../shared/data")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


# -- the plain baseline --------------------------------------------------------------------------
def _plain_features(words: list[str]) -> list[list[str]]:
    def one(w: str, p: str) -> list[str]:
        return [f"{p}w={w.lower()}", f"{p}up={w.isupper()}", f"{p}title={w.istitle()}",
                f"{p}digit={w.isdigit()}", f"{p}s3={w[-3:]}"]

    out = []
    for i, w in enumerate(words):
        f = ["bias", *one(w, "")]
        f += one(words[i - 1], "-1:") if i > 0 else ["BOS"]
        f += one(words[i + 1], "+1:") if i + 1 < len(words) else ["EOS"]
        out.append(f)
    return out


def _bio(tags: list[str]) -> list[str]:
    out, prev = [], None
    for t in tags:
        out.append("O" if t == "O" else ("I-" if t == prev else "B-") + t)
        prev = t
    return out


class PlainCRF:
    """The issue's baseline: standard features, BIO tags, confidence = P(Viterbi path)."""

    def fit(self, texts: list[str], records: list[dict]) -> "PlainCRF":
        import pycrfsuite

        t0 = time.perf_counter()
        trainer = pycrfsuite.Trainer(verbose=False)
        edges = []
        for text, rec in zip(texts, records):
            toks = tokenize(text)
            al = align_fields(text, toks, rec)
            if toks and not al.missing:
                trainer.append(_plain_features([t.text for t in toks]), _bio(al.tags))
                edges += al.edges
        trainer.set_params({"c1": 0.1, "c2": 0.1, "max_iterations": 100,
                            "feature.possible_transitions": True})
        with tempfile.TemporaryDirectory() as tmp:
            trainer.train(os.path.join(tmp, "m.crfsuite"))
            self.model = Path(tmp, "m.crfsuite").read_bytes()
        self.rule = EdgeRule.learn(edges)
        self.train_seconds_ = time.perf_counter() - t0
        return self

    def predict_with_confidence(self, texts: list[str]) -> tuple[list[dict], np.ndarray]:
        import pycrfsuite

        tagger = pycrfsuite.Tagger()
        tagger.open_inmemory(self.model)
        out, conf = [], []
        for text in texts:
            toks = tokenize(text)
            if not toks:
                out.append({})
                conf.append(1.0)
                continue
            tags = tagger.tag(_plain_features([t.text for t in toks]))
            conf.append(tagger.probability(tags))
            out.append(decode_fields(text, toks, [t.partition("-")[2] or t for t in tags], self.rule))
        return out, np.asarray(conf)


# -- measuring -----------------------------------------------------------------------------------
def field_f1(pred: list[dict], ref: list[dict]) -> dict:
    """Micro F1 over (field, value) pairs, and per-field F1."""
    tp, fp, fn = {}, {}, {}
    for p, r in zip(pred, ref):
        p, r = normalise_record(p), normalise_record(r)
        for f in set(p) | set(r):
            hit = f in p and f in r and p[f] == r[f]
            tp[f] = tp.get(f, 0) + hit
            fp[f] = fp.get(f, 0) + (f in p and not hit)
            fn[f] = fn.get(f, 0) + (f in r and not hit)

    def f1(a: int, b: int, c: int) -> float:
        return 2 * a / (2 * a + b + c) if a + b + c else 1.0

    per = {f: f1(tp[f], fp[f], fn[f]) for f in sorted(tp)}
    micro = f1(sum(tp.values()), sum(fp.values()), sum(fn.values()))
    return {"micro": micro, "macro": float(np.mean(list(per.values()))), "per_field": per}


def calibrated(cal_conf, cal_ok, test_conf, test_ok, alpha) -> dict:
    try:
        cal = ThresholdCalibrator(alpha=alpha, delta=DELTA, bound="hoeffding_bentkus").fit(cal_conf, cal_ok)
    except CalibrationError:
        return {"threshold": None, "answered": 0.0, "realised": None}
    if cal.threshold_ is None:
        return {"threshold": None, "answered": 0.0, "realised": None}
    ans = test_conf >= cal.threshold_
    return {"threshold": cal.threshold_, "answered": float(ans.mean()),
            "realised": float(1 - test_ok[ans].mean()) if ans.any() else 0.0}


def resplits(conf, ok, n_cal, alpha, n, seed=0) -> dict:
    """Redraw n_cal calibration rows from the pool, the rest is test; how often is realised ≤ α?"""
    rng = np.random.default_rng(seed)
    held, covs, risks = 0, [], []
    for _ in range(n):
        perm = rng.permutation(len(conf))
        r = calibrated(conf[perm[:n_cal]], ok[perm[:n_cal]], conf[perm[n_cal:]], ok[perm[n_cal:]], alpha)
        covs.append(r["answered"])
        if r["realised"] is not None:
            risks.append(r["realised"])
        held += r["realised"] is None or r["realised"] <= alpha
    return {"resplits": n, "held_share": held / n, "answered_mean": float(np.mean(covs)),
            "realised_mean": float(np.mean(risks)) if risks else None,
            "realised_max": float(np.max(risks)) if risks else None}


MODELS = {
    "plain": PlainCRF,
    "tagger": TaggerStudent,
    # ablation: the tagger with the CRF's probability of the answer as its confidence
    "tagger-answer": lambda: TaggerStudent(confidence="answer"),
}


def make(kind: str):
    return MODELS[kind]()


def timed_fit(kind, texts, recs):
    t0 = time.perf_counter()
    model = make(kind).fit(texts, recs)
    return model, time.perf_counter() - t0


def evaluate(kind: str, train: list[dict], test: list[dict], n_resplits: int, seed: int = 0) -> dict:
    texts = [r["text"] for r in train]
    recs = [r["fields"] for r in train]
    te_texts, te_recs = [r["text"] for r in test], [r["fields"] for r in test]
    out: dict = {"model": kind}

    # split: 70 % fit, 30 % calibrate
    perm = np.random.default_rng(seed).permutation(len(train))
    n_cal = int(round(0.3 * len(train)))
    cal_i, fit_i = perm[:n_cal], perm[n_cal:]
    model, fit_s = timed_fit(kind, [texts[i] for i in fit_i], [recs[i] for i in fit_i])
    cal_pred, cal_conf = model.predict_with_confidence([texts[i] for i in cal_i])
    cal_ok = np.array([same_answer(p, recs[i]) for p, i in zip(cal_pred, cal_i)])
    t0 = time.perf_counter()
    te_pred, te_conf = model.predict_with_confidence(te_texts)
    cold = len(te_texts) / (time.perf_counter() - t0)
    big = te_texts * 5
    t0 = time.perf_counter()
    model.predict_with_confidence(big)
    warm = len(big) / (time.perf_counter() - t0)
    te_ok = np.array([same_answer(p, r) for p, r in zip(te_pred, te_recs)])
    from sklearn.metrics import roc_auc_score

    out["split"] = {
        "train_seconds": fit_s, "records_per_s_cold": cold, "records_per_s_warm": warm,
        "exact": float(te_ok.mean()), "f1": field_f1(te_pred, te_recs),
        "auroc": float(roc_auc_score(te_ok, te_conf)) if 0 < te_ok.mean() < 1 else None,
        "n_cal": int(n_cal),
    }
    pool_c, pool_ok = np.r_[cal_conf, te_conf], np.r_[cal_ok, te_ok]
    for a in ALPHAS:
        out["split"][f"alpha_{a:g}"] = {**calibrated(cal_conf, cal_ok, te_conf, te_ok, a),
                                        **resplits(pool_c, pool_ok, n_cal, a, n_resplits)}

    # cross-fitted: 5-fold out-of-fold confidences on the whole train file, refit on all of it
    fold = np.random.default_rng(seed + 1).permutation(len(train)) % 5
    oof_conf, oof_ok = np.zeros(len(train)), np.zeros(len(train), dtype=bool)
    for k in range(5):
        tr, ho = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        m, _ = timed_fit(kind, [texts[i] for i in tr], [recs[i] for i in tr])
        p, c = m.predict_with_confidence([texts[i] for i in ho])
        oof_conf[ho] = c
        oof_ok[ho] = [same_answer(a, recs[i]) for a, i in zip(p, ho)]
    full, full_s = timed_fit(kind, texts, recs)
    fp, fc = full.predict_with_confidence(te_texts)
    f_ok = np.array([same_answer(p, r) for p, r in zip(fp, te_recs)])
    out["cross"] = {"train_seconds": full_s, "exact": float(f_ok.mean()), "f1": field_f1(fp, te_recs),
                    "n_cal": len(train)}
    pool_c, pool_ok = np.r_[oof_conf, fc], np.r_[oof_ok, f_ok]
    for a in ALPHAS:
        out["cross"][f"alpha_{a:g}"] = {**calibrated(oof_conf, oof_ok, fc, f_ok, a),
                                        **resplits(pool_c, pool_ok, len(train), a, n_resplits)}
    oof = getattr(full, "oof_confidence_", None)
    if oof is not None:  # the tagger's own out-of-fold confidences: cross-fitting at no extra fit
        out["own_oof"] = {"n_cal": len(train)}
        pool_c, pool_ok = np.r_[oof, fc], np.r_[full.oof_correct_, f_ok]
        for a in ALPHAS:
            out["own_oof"][f"alpha_{a:g}"] = {**calibrated(oof, full.oof_correct_, fc, f_ok, a),
                                              **resplits(pool_c, pool_ok, len(train), a, n_resplits)}
    return out


def independent(kind: str, train: list[dict], test: list[dict], n: int, folds: int = 3) -> dict:
    """The project's pipeline on fresh data each time (``calibration_folds: 3``, the default):
    per resplit, pool the train and test files, hold out 20 % as *test traffic never calibrated
    on*, cross-fit ``folds`` models on the rest (λ from their out-of-fold confidences), refit on
    all of the rest and answer the held-out 20 % with it. Unlike the pooled resplits above, the
    test rows are independent of the calibration rows (redrawing both from one small fixed pool
    makes a lucky calibration draw an unlucky test draw)."""
    from downsize.calibration.crossfit import folds as make_folds

    pool = train + test
    texts, recs = [r["text"] for r in pool], [r["fields"] for r in pool]
    per = {a: {"answered": [], "realised": [], "held": 0} for a in ALPHAS}
    t0 = time.perf_counter()
    for seed in range(n):
        perm = np.random.default_rng(1000 + seed).permutation(len(pool))
        n_test = len(pool) // 5
        te, L = perm[:n_test], perm[n_test:]
        fold = make_folds(len(L), folds, None, seed)
        oof_conf, oof_ok = np.zeros(len(L)), np.zeros(len(L), dtype=bool)
        for k in range(folds):
            tr, ho = L[fold != k], L[fold == k]
            m = make(kind).fit([texts[i] for i in tr], [recs[i] for i in tr])
            p, c = m.predict_with_confidence([texts[i] for i in ho])
            oof_conf[fold == k] = c
            oof_ok[fold == k] = [same_answer(a, recs[i]) for a, i in zip(p, ho)]
        full = make(kind).fit([texts[i] for i in L], [recs[i] for i in L])
        tp, tc = full.predict_with_confidence([texts[i] for i in te])
        t_ok = np.array([same_answer(a, recs[i]) for a, i in zip(tp, te)])
        for a in ALPHAS:
            r = calibrated(oof_conf, oof_ok, tc, t_ok, a)
            per[a]["answered"].append(r["answered"])
            if r["realised"] is not None:
                per[a]["realised"].append(r["realised"])
            per[a]["held"] += r["realised"] is None or r["realised"] <= a
        print(f"  {kind} resplit {seed + 1}/{n}: " + ", ".join(
            f"α={a:g} answered {per[a]['answered'][-1]:.1%}" for a in ALPHAS) + f" ({time.perf_counter() - t0:.0f} s)",
              flush=True)
    return {"model": kind, "resplits": n, "folds": folds, "n_test": len(pool) // 5, "seconds": time.perf_counter() - t0,
            **{f"alpha_{a:g}": {"answered_mean": float(np.mean(v["answered"])),
                                "answered_sd": float(np.std(v["answered"])),
                                "realised_mean": float(np.mean(v["realised"])) if v["realised"] else None,
                                "realised_max": float(np.max(v["realised"])) if v["realised"] else None,
                                "held_share": v["held"] / n} for a, v in per.items()}}


def speed(kind: str, train: list[dict], test: list[dict], repeat: int = 5) -> dict:
    """Train once, then predict the test file in one batch: wall and CPU time (the CPU rate is
    what a busy machine does not distort: records per CPU-second of this process)."""
    model, fit_s = timed_fit(kind, [r["text"] for r in train], [r["fields"] for r in train])
    texts = [r["text"] for r in test]
    out = {"model": kind, "train_seconds": fit_s}
    for label, batch, runs in (("cold", texts, 1), ("warm", texts * repeat, 1), ("steady", texts * repeat, 3)):
        best_w = best_c = float("inf")
        for _ in range(runs):  # steady: the best of 3 more calls (a server's or a chunked batch's later calls)
            w0, c0 = time.perf_counter(), time.process_time()
            model.predict_with_confidence(batch)
            best_w, best_c = min(best_w, time.perf_counter() - w0), min(best_c, time.process_time() - c0)
        out[f"records_per_s_{label}"] = len(batch) / best_w
        out[f"records_per_cpu_s_{label}"] = len(batch) / best_c
    return out


def _pct(x) -> str:
    return "  —  " if x is None else f"{100 * x:5.1f}"


def show(name: str, rows: list[dict]) -> None:
    print(f"\n== {name} ==")
    for r in rows:
        s = r["split"]
        print(f"{r['model']:8s} train {s['train_seconds']:6.1f} s | predict {s['records_per_s_cold']:7.0f} rec/s "
              f"cold, {s['records_per_s_warm']:7.0f} warm | exact {_pct(s['exact'])} % | field F1 micro "
              f"{_pct(s['f1']['micro'])} macro {_pct(s['f1']['macro'])} | AUROC {s['auroc'] or 0:.3f}")
    print(f"{'model':8s} {'calibration':12s} {'n_cal':>5s} {'α':>4s} | {'answered':>8s} {'realised':>8s} | "
          f"{'resplits: ≤α':>12s} {'answered':>8s} {'realised max':>12s}")
    for r in rows:
        for proto in [p for p in ("split", "cross", "own_oof") if p in r]:
            for a in ALPHAS:
                x = r[proto][f"alpha_{a:g}"]
                print(f"{r['model']:8s} {proto:12s} {r[proto]['n_cal']:5d} {100 * a:3.0f}% | "
                      f"{_pct(x['answered'])} % {_pct(x['realised'])} % | {100 * x['held_share']:10.0f} % "
                      f"{_pct(x['answered_mean'])} % {_pct(x['realised_max'])} %")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["us_addresses", "person_names"])
    ap.add_argument("--resplits", type=int, default=100)
    ap.add_argument("--models", nargs="+", default=["plain", "tagger"], choices=list(MODELS))
    ap.add_argument("--speed", action="store_true", help="only train once and time batch prediction")
    ap.add_argument("--independent", type=int, default=0, metavar="N",
                    help="only the pipeline's own protocol (3-fold cross-fit) on N fresh resplits with an "
                         "independent 20 %% test part, into extract-<dataset>-independent.json")
    args = ap.parse_args()
    RESULTS.mkdir(exist_ok=True)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (timings scale with it)")
    if args.speed:
        rows = []
        for name in args.datasets:
            train, test = load(name, "train"), load(name, "test")
            for k in args.models:
                r = {"dataset": name, **speed(k, train, test)}
                rows.append(r)
                print(f"{name:13s} {k:14s} train {r['train_seconds']:6.1f} s | predict (batch of {len(test)}) "
                      f"cold {r['records_per_s_cold']:6.0f} rec/s ({r['records_per_cpu_s_cold']:6.0f} per CPU-s), "
                      f"warm {r['records_per_s_warm']:6.0f} rec/s, steady {r['records_per_s_steady']:6.0f} rec/s "
                      f"({r['records_per_cpu_s_steady']:6.0f} per CPU-s)")
        (RESULTS / "extract-speed.json").write_text(json.dumps(
            {"load_average": os.getloadavg()[0], "results": rows}, indent=2) + "\n")
        return
    if args.independent:
        for name in args.datasets:
            train, test = load(name, "train"), load(name, "test")
            rows = [independent(k, train, test, args.independent) for k in args.models]
            print(f"\n== {name}: cross-fitted (3 folds), {args.independent} resplits, independent test part ==")
            print(f"{'model':8s} {'α':>4s} | {'answered':>16s} {'realised mean':>13s} {'max':>6s} | {'≤ α in':>7s}")
            for r in rows:
                for a in ALPHAS:
                    x = r[f"alpha_{a:g}"]
                    print(f"{r['model']:8s} {100 * a:3.0f}% | {_pct(x['answered_mean'])} % ± {_pct(x['answered_sd'])} "
                          f"{_pct(x['realised_mean'])} % {_pct(x['realised_max'])} | {100 * x['held_share']:5.0f} %")
            (RESULTS / f"extract-{name}-independent.json").write_text(json.dumps(
                {"dataset": name, "pool": len(train) + len(test), "delta": DELTA,
                 "load_average": os.getloadavg()[0], "results": rows}, indent=2) + "\n")
        return
    for name in args.datasets:
        train, test = load(name, "train"), load(name, "test")
        rows = [evaluate(k, train, test, args.resplits) for k in args.models]
        show(name, rows)
        tail = "" if args.models == ["plain", "tagger"] else "-" + "+".join(args.models)
        (RESULTS / f"extract-{name}{tail}.json").write_text(json.dumps(
            {"dataset": name, "train": len(train), "test": len(test), "delta": DELTA,
             "load_average": os.getloadavg()[0], "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
