"""``downsize synth`` on Rotten Tomatoes and Reuters R8: what synthetic examples buy over real ones alone.

The teacher is the replay server with a generation pool: a generation request for a label is
answered with a recorded real example of that label from a slice of the training split that is
kept apart from the real examples (a stand-in for a model that writes plausible examples; a real
LLM's examples are less varied and less on-distribution, so these figures are an upper bound on
what synthetic data buys). Each cell runs the whole pipeline: real examples (``k`` per label,
labelled by the teacher) in a fresh store, ``downsize synth --per-label S`` through the teacher's
cache, verification and de-duplication, ``train`` (TF-IDF, ``synthetic_weight`` 1), and the
student's accuracy and macro-F1 against the teacher on the test split. ``k = 0`` is the cold
start (synthetic only: the student trains, calibration refuses). Mean ± sd over seeds (the real
and the pool samples are redrawn per seed).

Usage::

    nice -n 10 python benchmarks/bench_synth.py                 # ~5 min on 2 busy cores
    nice -n 10 python benchmarks/bench_synth.py --seeds 2 --test 500
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_traffic as mt

from downsize.errors import CalibrationError
from downsize.project import Project
from downsize.replay import ReplayServer
from downsize.training import load_student_version

RESULTS = Path(__file__).resolve().parent / "results"
SETS = {"rotten_tomatoes": "Is this movie review positive or negative?",
        "reuters_r8": "Route the newswire story to the desk of its topic."}
CONFIG = """\
store: sqlite:///{home}/downsize.db
teachers:
  default: {{base_url: "{url}", model: replay, price_per_1m_input: 2.5, price_per_1m_output: 10,
             max_concurrency: 16, timeout_s: 30, max_retries: 1}}
tasks:
  t:
    kind: classify
    instructions: {instructions}
    labels: {labels}
    min_examples_per_label: 2
"""


def rows(name: str, split: str) -> list[tuple[str, str]]:
    with gzip.open(mt.SHARED / f"{name}-{split}.csv.gz", "rt", encoding="utf-8") as fh:
        return [(r["text"], r["label"]) for r in csv.DictReader(fh)]


def cell(name: str, k: int, s: int, seed: int, train: list[tuple[str, str]], test: list[tuple[str, str]],
         tmp: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    by: dict[str, list[str]] = {}
    for t, y in train:
        by.setdefault(y, []).append(t)
    labels = sorted(by)
    real, pool = [], {}
    for y in labels:
        texts = by[y][:]
        rng.shuffle(texts)
        real += [(t, y) for t in texts[:k]]
        pool |= {t: y for t in texts[k:k + 3 * s + 40]}  # kept apart from the real examples
    home = tmp / f"{name}-{k}-{s}-{seed}"
    home.mkdir()
    with ReplayServer(dict(real) | {t: y for t, y in test}, pool=pool) as replay:
        (home / "downsize.yaml").write_text(CONFIG.format(home=home, url=replay.base_url, instructions=SETS[name],
                                                          labels=json.dumps({y: y for y in labels})))
        with Project.open(home / "downsize.yaml") as p:
            out: dict[str, Any] = {"real_per_label": k, "synthetic_per_label": s, "seed": seed}
            if real:
                ids = p.store.add_examples("t", [t for t, _ in real], source="real")
                p.store.add_labels("t", zip(ids, [y for _, y in real]), source="teacher")
            t0 = time.perf_counter()
            if s:
                sy = p.synth("t", s, progress=False)
                out |= {"kept": sy.kept, "duplicates": sum(c["duplicates"] for c in sy.targets.values()),
                        "rejected": sum(c["rejected"] for c in sy.targets.values()),
                        "teacher_calls": sy.generation_calls + sy.verification_calls}
            out["synth_seconds"] = time.perf_counter() - t0
            if not real and not s:
                return {**out, "accuracy": None, "macro_f1": None}
            tr = p.train("t", kind="tfidf", seed=seed)
            st = load_student_version(p.store.latest_student("t"), p.config.home_dir())
            task = p.config.task("t")
            pred, _ = task.score(st, [t for t, _ in test])
            m = task.metrics(pred, [y for _, y in test])
            try:
                run, _ = p.calibrate("t")
                cal = {"coverage": run.coverage, "threshold": run.threshold}
            except CalibrationError as exc:
                cal = {"refused": str(exc)[:120]}
            return {**out, "n_train": tr.n_train, "accuracy": m["accuracy"], "macro_f1": m["macro_f1"],
                    "calibration": cal}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--test", type=int, default=1000, help="test rows per set")
    ap.add_argument("--real", default="0,8,32")
    ap.add_argument("--synthetic", default="0,32,128")
    ap.add_argument("--sets", default=",".join(SETS), help="comma-separated: rotten_tomatoes, reuters_r8")
    ap.add_argument("--json", type=Path, default=RESULTS / "synth.json")
    a = ap.parse_args()
    ks, ss = [int(x) for x in a.real.split(",")], [int(x) for x in a.synthetic.split(",")]
    print(f"# bench_synth: {a.seeds} seeds, TF-IDF student, accuracy vs the teacher on {a.test} test rows "
          f"({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})")
    results: dict[str, Any] = {"seeds": a.seeds, "test_rows": a.test, "cells": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.sets.split(","):
            train = rows(name, "train")
            test = rows(name, "test")
            random.Random(0).shuffle(test)
            test = test[: a.test]
            print(f"\n## {name}: accuracy (macro-F1), mean ± sd over {a.seeds} seeds\n")
            print(f"{'real/label':>10s} " + " ".join(f"{'+' + str(s) + ' synth':>22s}" for s in ss))
            for k in ks:
                line = []
                for s in ss:
                    runs = [cell(name, k, s, seed, train, test, Path(tmp)) for seed in range(a.seeds)]
                    acc = [r["accuracy"] for r in runs if r["accuracy"] is not None]
                    f1 = [r["macro_f1"] for r in runs if r["macro_f1"] is not None]
                    results["cells"][f"{name}/real{k}/synth{s}"] = {
                        "runs": runs, "accuracy_mean": float(np.mean(acc)) if acc else None,
                        "accuracy_sd": float(np.std(acc)) if acc else None,
                        "macro_f1_mean": float(np.mean(f1)) if f1 else None}
                    line.append(f"{100 * np.mean(acc):5.1f} ± {100 * np.std(acc):3.1f} ({np.mean(f1):.3f})"
                                if acc else "(nothing to train)")
                print(f"{k:10d} " + " ".join(f"{x:>22s}" for x in line))
            json.dump(results, open(a.json, "w"), indent=1, default=str)
    print(f"\nresults: {a.json}")


if __name__ == "__main__":
    main()
