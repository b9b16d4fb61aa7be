"""``student: auto`` against each single candidate (issue 15): certified coverage and train time.

For each set of ../shared/data with more than one student family (Rotten Tomatoes and Reuters R8,
``kind: classify``; debtags, ``kind: multilabel`` with ``loss: f1``): the train file is labelled
by the replay teacher (its recorded answers) into a real project; then, for each of ``--resplits``
seeds (the seed moves the cross-fitting folds), ``downsize train`` with ``student: tfidf``, with
``minilm`` (when installed) and with ``auto`` (which also considers their ensemble), each followed by
``downsize calibrate`` at the set's α. Reported per run: what the calibration certified (coverage of
the out-of-fold rows), the train time (wall clock, embedding included: the MiniLM memory cache and
the project's on-disk embedding cache are emptied before every run, so auto and minilm each pay for
embedding once, as on a first ``train``), and, on the test file,
the share answered locally and the realised loss against the recorded answers (the task kind's own
loss: disagreement for classify, 1 − F1 of the label set for debtags). The extraction sets are not
here: ``kind: extract`` has one student family (``crf``), so ``auto`` there *is* that family.

The check of the issue: auto's certified coverage ≥ the best single candidate's minus the resplit
noise (2 standard deviations of the best candidate's coverage over the seeds, at least one point),
and auto's train time ≤ the sum of the candidates' train times.

    nice -n 10 python benchmarks/bench_auto.py [--resplits 3] [--datasets rotten_tomatoes reuters_r8]

Writes benchmarks/results/auto.json.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from downsize.data import read_texts
from downsize.project import Project
from downsize.replay import ReplayServer
from downsize.students import available
from downsize.training import embedding_cache_dir, load_student_version

SHARED = Path(os.environ.get("DOWNSIZE_SHARED_DATA", "/work/shared/data"))
RESULTS = Path(__file__).resolve().parent / "results"
ALPHA = {"rotten_tomatoes": 0.05, "reuters_r8": 0.02, "debtags": 0.10}
LABELS = {
    "reuters_r8": {"earn": "earnings", "acq": "acquisitions", "crude": "crude oil", "trade": "trade",
                   "money-fx": "money markets and FX", "interest": "interest rates", "ship": "shipping",
                   "grain": "grain"},
    "rotten_tomatoes": {"positive": "a favourable review", "negative": "an unfavourable review"},
}
CONFIG = """\
store: sqlite:///.downsize/downsize.db
teachers:
  default: {{base_url: "{url}", model: replay, price_per_1m_input: 2.5, price_per_1m_output: 10,
             max_concurrency: 32, timeout_s: 30, max_retries: 2}}
tasks:
  bench:
    instructions: {instructions}
    labels: {labels}
    alpha: {alpha}
{extra}"""
#: Per set: (instructions, extra task lines) beyond the labels and α.
TASK = {
    "reuters_r8": ("Classify the text.", ""),
    "rotten_tomatoes": ("Classify the text.", ""),
    "debtags": ("Tag the Debian package with every tag that applies.", "    kind: multilabel\n    loss: f1\n"),
}


def load(name: str, split: str, limit: int | None = None) -> tuple[list[str], list]:
    """Texts and recorded answers of one split (label strings, or label lists for debtags)."""
    if name == "debtags":
        with gzip.open(SHARED / f"debtags-{split}.jsonl.gz", "rt", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh][:limit]
        return [r["text"] for r in rows], [r["labels"] for r in rows]
    d = read_texts(SHARED / f"{name}-{split}.csv.gz", label_col="label", limit=limit)
    return d.texts, d.labels or []


def _cold_minilm(home: Path) -> None:
    """Forget every embedding: the encoder's memory cache and the project's on-disk cache."""
    from downsize.students import minilm

    minilm._shared_encoder.cache_clear()
    shutil.rmtree(embedding_cache_dir(home), ignore_errors=True)


def run(name: str, resplits: int, limit: int | None) -> dict:
    tr_x, tr_y = load(name, "train", limit)
    te_x, te_y = load(name, "test")
    kinds = ["tfidf"] + (["minilm"] if available("minilm") else [])
    out: dict = {"alpha": ALPHA[name], "n_train": len(tr_x), "n_test": len(te_x), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        recorded = d / "recorded.jsonl"  # the replay teacher's answers: a label, or a JSON label list
        recorded.write_text("".join(json.dumps({"text": t, "answer": a}) + "\n" for t, a in zip(tr_x + te_x, tr_y + te_y)))
        with ReplayServer.from_file(recorded, label_col="answer") as srv:
            labels = LABELS.get(name) or {x: x for x in sorted({lab for s in tr_y + te_y for lab in s})}
            instructions, extra = TASK[name]
            (d / "downsize.yaml").write_text(CONFIG.format(url=srv.base_url, labels=json.dumps(labels),
                                                           alpha=ALPHA[name], instructions=instructions, extra=extra))
            with gzip.open(d / "train.csv.gz", "wt", encoding="utf-8", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["text"])
                w.writerows([t] for t in tr_x)
            with Project.open(d / "downsize.yaml") as p:
                p.label("bench", d / "train.csv.gz", progress=False)
                task = p.config.task("bench")
                _runs(p, task, name, kinds, resplits, te_x, [task.normalise(a) for a in te_y], out)
    return _summarise(out, kinds)


def _runs(p: Project, task, name: str, kinds: list[str], resplits: int, te_x: list[str], ref: list,
          out: dict) -> None:
    """Each seed: train every candidate and auto cold, calibrate, score the test file with the task's loss."""
    for seed in range(resplits):
        for kind in [*kinds, "auto"]:
            _cold_minilm(p.config.home_dir())
            t0 = time.perf_counter()
            r = p.train("bench", kind=kind, seed=seed)
            secs = time.perf_counter() - t0
            run_, _ = p.calibrate("bench")
            st = load_student_version(p.store.latest_student("bench"), p.config.home_dir())
            pred, conf = task.score(st, te_x)
            conf = np.asarray(conf)
            loss = task.disagreements(pred, ref)
            ans = conf >= run_.threshold if run_.threshold is not None else np.zeros(len(conf), bool)
            row = {"seed": seed, "student": kind, "chosen": r.kind, "certified": run_.coverage,
                   "train_seconds": secs, "test_answered": float(ans.mean()),
                   "test_realised": float(loss[ans].mean()) if ans.any() else 0.0,
                   "selection": [{k: s[k] for k in ("kind", "coverage", "fit_seconds")} for s in r.selection]}
            out["runs"].append(row)
            print(f"{name} seed {seed} {kind:6} → {r.kind:8} certified {run_.coverage:6.1%}  test answered "
                  f"{row['test_answered']:6.1%} realised {row['test_realised']:.2%}  {secs:6.1f} s", flush=True)


def _summarise(out: dict, kinds: list[str]) -> dict:
    by = {k: [r for r in out["runs"] if r["student"] == k] for k in [*kinds, "auto"]}
    summary = {k: {"certified_mean": float(np.mean([r["certified"] for r in v])),
                   "certified_sd": float(np.std([r["certified"] for r in v])),
                   "train_seconds_mean": float(np.mean([r["train_seconds"] for r in v])),
                   "test_answered_mean": float(np.mean([r["test_answered"] for r in v])),
                   "test_realised_max": float(np.max([r["test_realised"] for r in v]))} for k, v in by.items()}
    best = max(kinds, key=lambda k: summary[k]["certified_mean"])
    noise = max(0.01, 2 * summary[best]["certified_sd"])
    out["summary"] = summary
    out["check"] = {"best_single": best, "noise": noise,
                    "auto_not_worse": summary["auto"]["certified_mean"] >= summary[best]["certified_mean"] - noise,
                    "auto_time_within_sum": summary["auto"]["train_seconds_mean"]
                    <= sum(summary[k]["train_seconds_mean"] for k in kinds)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resplits", type=int, default=3)
    ap.add_argument("--datasets", nargs="+", default=list(ALPHA))
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training rows")
    args = ap.parse_args(argv)
    if not (SHARED / "rotten_tomatoes-train.csv.gz").exists():
        sys.exit(f"{SHARED} has no data: set DOWNSIZE_SHARED_DATA")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "auto.json"
    for name in args.datasets:
        res = run(name, args.resplits, args.limit)
        allres = json.loads(path.read_text()) if path.exists() else {}
        allres[name] = res
        path.write_text(json.dumps(allres, indent=1))
        print(f"\n{name} (α = {res['alpha']:.0%}, δ = 5 %, {args.resplits} seeds)")
        print(f"{'student':8} {'certified':>16} {'test answered':>14} {'realised max':>13} {'train s':>9}")
        for k, s in res["summary"].items():
            print(f"{k:8} {s['certified_mean']:8.1%} ± {s['certified_sd']:4.1%} {s['test_answered_mean']:14.1%} "
                  f"{s['test_realised_max']:13.2%} {s['train_seconds_mean']:9.1f}")
        c = res["check"]
        print(f"auto ≥ best single ({c['best_single']}) − noise {c['noise']:.1%}: {c['auto_not_worse']}; "
              f"auto's time ≤ sum of the candidates': {c['auto_time_within_sum']}")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
