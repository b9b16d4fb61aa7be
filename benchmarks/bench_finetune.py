"""Fine-tuned MiniLM vs today's tfidf and minilm students, in one run (issue 11, items 1 and 3).

For each dataset (Rotten Tomatoes, Reuters R8 from ../shared/data):

1. train each student once on the training split (finetune: time, steps, epochs, why it
   stopped, threads, the machine's load average; parity of the int8 ONNX model against the
   fp32 torch model on its held-out split);
2. score the test split once, then over ``--resplits`` random halvings of it calibrate
   ``ThresholdCalibrator(alpha, delta)`` (the project's calibration) on one half and apply λ to
   the other: certified coverage (calibration half), answered share and realised disagreement
   (test half), for α = 5 % and 2 %, δ = 0.05; the guarantee holds when realised ≤ α in ≥ 95 %
   of the resplits;
3. throughput: the saved finetune student served by onnxruntime (int8) on short texts, and the
   frozen MiniLM encoder end to end against the raw int8 ONNX session on the same token rows
   (tokenised, cut and padded beforehand: only ``session.run``), in tokens/s.

Usage (≤ ~15 min on 2 idle cores)::

    nice -n 10 python benchmarks/bench_finetune.py
    nice -n 10 python benchmarks/bench_finetune.py --datasets rotten_tomatoes --ft-max-seconds 300
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

from downsize.calibration import ThresholdCalibrator
from downsize.data import read_texts
from downsize.errors import CalibrationError
from downsize.students import load_student, make_student

REPO = Path(__file__).resolve().parents[1]
# ../shared/data beside the repository (a worktree under wt/ looks one level further up)
SHARED = next((p / "shared" / "data" for p in REPO.parents if (p / "shared" / "data").is_dir()),
              REPO.parent / "shared" / "data")
RESULTS = REPO / "benchmarks" / "results"
ALPHAS = (0.05, 0.02)


def load(name: str, max_train: int | None) -> tuple[list[str], list[str], list[str], list[str]]:
    a = read_texts(SHARED / f"{name}-train.csv.gz", label_col="label")
    b = read_texts(SHARED / f"{name}-test.csv.gz", label_col="label")
    n = max_train or len(a.texts)
    return a.texts[:n], (a.labels or [])[:n], b.texts, b.labels or []


def resplits(conf: np.ndarray, correct: np.ndarray, alpha: float, delta: float, n: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    cov_cal, answered, realised, holds = [], [], [], []
    for _ in range(n):
        perm = rng.permutation(len(conf))
        cal, test = perm[: len(perm) // 2], perm[len(perm) // 2 :]
        try:
            c = ThresholdCalibrator(alpha=alpha, delta=delta).fit(conf[cal], correct[cal])
        except CalibrationError:
            c = None
        if c is None or c.threshold_ is None:
            cov_cal.append(0.0), answered.append(0.0), realised.append(0.0), holds.append(True)
            continue
        mask = conf[test] >= c.threshold_
        err = float(np.mean(~correct[test][mask])) if mask.any() else 0.0
        cov_cal.append(c.coverage_), answered.append(float(mask.mean())), realised.append(err)
        holds.append(err <= alpha)
    return {
        "certified_coverage_median": float(np.median(cov_cal)),
        "answered_test_median": float(np.median(answered)),
        "answered_test_mean": float(np.mean(answered)),
        "answered_test_p10": float(np.percentile(answered, 10)),
        "realised_median": float(np.median(realised)),
        "realised_max": float(np.max(realised)),
        "share_realised_le_alpha": float(np.mean(holds)),
        "share_with_threshold": float(np.mean(np.array(cov_cal) > 0)),
    }


def encoder_speed(texts: list[str]) -> dict[str, float]:
    """The MiniLM encoder end to end vs the raw int8 session on the same rows (tokens/s)."""
    from downsize.students.batching import head_tail, length_batches, pad
    from downsize.students.encoder import MiniLMEncoder

    enc = MiniLMEncoder(max_length=128, batch_size=32, progress=False)
    enc.encode(texts[:64])  # load the session, warm up
    t0 = time.perf_counter()
    enc._run(texts)  # no cache: the whole path (tokenise, cut, sort, pad, run, pool)
    t_enc = time.perf_counter() - t0
    rows = [head_tail(e.ids, 128) for e in enc._tokenizer.encode_batch(texts)]
    lengths = np.array([len(r) for r in rows])
    batches = [pad([rows[j] for j in idx]) for idx in length_batches(lengths, 32, 32 * 128)]
    t0 = time.perf_counter()
    for ids, mask in batches:
        enc._session.run(["last_hidden_state"],
                         {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    t_raw = time.perf_counter() - t0
    tokens = int(lengths.sum())
    return {"texts": len(texts), "tokens": tokens, "encoder_tokens_per_s": tokens / t_enc,
            "raw_onnx_tokens_per_s": tokens / t_raw, "encoder_rows_per_s": len(texts) / t_enc,
            "ratio": t_raw / t_enc}


def bench_dataset(name: str, args: argparse.Namespace) -> dict[str, object]:
    X, y, Xt, yt = load(name, args.max_train)
    yt_arr = np.asarray(yt, dtype=object)
    out: dict[str, object] = {"dataset": name, "n_train": len(X), "n_heldout": len(Xt), "students": {}}
    for kind in args.students:
        params: dict[str, object] = {"random_state": 0}
        if kind == "finetune":
            params |= {"max_seconds": args.ft_max_seconds, "progress": sys.stderr.isatty(),
                       "threads": args.ft_threads}
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        st = make_student(kind, **params).fit(X, y)
        row: dict[str, object] = {"train_s": time.perf_counter() - t0,
                                  "load_avg_before": load_before, "load_avg_after": os.getloadavg()}
        t0 = time.perf_counter()
        proba = st.predict_proba(Xt)
        row["score_rows_per_s"] = len(Xt) / (time.perf_counter() - t0)
        pred = st.classes_[proba.argmax(1)]
        conf, correct = proba.max(1), pred == yt_arr
        row["accuracy"] = float(correct.mean())
        for a in ALPHAS:
            row[f"alpha={a:g}"] = resplits(conf, correct, a, args.delta, args.resplits)
        if kind == "finetune":
            rep = {k: v for k, v in st.train_report_.items() if k != "history"}
            row |= {"train_report": rep, "history": st.train_report_.get("history"), "parity": st.parity_,
                    "max_length": st.max_length_, "temperature": st.temperature_}
            with tempfile.TemporaryDirectory() as tmp:
                served = load_student(st.save(Path(tmp) / "ft"))
                row["size_bytes"] = served.size_bytes()
                short = [t for t in Xt if len(t) < 200][:2000]
                best = float("inf")
                for _ in range(2):
                    t0 = time.perf_counter()
                    served.predict_proba(short)
                    best = min(best, time.perf_counter() - t0)
                row["served_short_texts_per_s"] = len(short) / best
        out["students"][kind] = row  # type: ignore[index]
        print(f"{name} {kind}: {json.dumps(row, default=str)[:600]}", flush=True)
    if args.encoder_speed:
        out["encoder_speed"] = encoder_speed(Xt[: args.encoder_texts])
        print(f"{name} encoder: {out['encoder_speed']}", flush=True)
    return out


def table(results: list[dict[str, object]]) -> str:
    lines = ["| dataset | student | accuracy | local @5% (median, test half) | ≤α in resplits @5% | "
             "local @2% | ≤α @2% | train s |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for kind, row in r["students"].items():  # type: ignore[union-attr]
            a5, a2 = row["alpha=0.05"], row["alpha=0.02"]
            lines.append(f"| {r['dataset']} | {kind} | {row['accuracy']:.1%} | {a5['answered_test_median']:.1%} | "
                         f"{a5['share_realised_le_alpha']:.0%} | {a2['answered_test_median']:.1%} | "
                         f"{a2['share_realised_le_alpha']:.0%} | {row['train_s']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["rotten_tomatoes", "reuters_r8"])
    ap.add_argument("--students", nargs="+", default=["tfidf", "minilm", "finetune"])
    ap.add_argument("--resplits", type=int, default=50)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--max-train", type=int, default=None)
    ap.add_argument("--ft-max-seconds", type=float, default=600.0)
    ap.add_argument("--ft-threads", type=int, default=None,
                    help="torch/onnxruntime threads of the finetune student (default: the cores)")
    ap.add_argument("--encoder-texts", type=int, default=600)
    ap.add_argument("--no-encoder-speed", dest="encoder_speed", action="store_false")
    ap.add_argument("--out", default="finetune")
    args = ap.parse_args()
    t0 = time.time()
    results = [bench_dataset(d, args) for d in args.datasets]
    doc = {"args": vars(args), "cores": len(os.sched_getaffinity(0)), "load_avg_end": os.getloadavg(),
           "wall_s": time.time() - t0, "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    md = table(results)
    (RESULTS / f"{args.out}.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
