"""Cascade benchmark (issue: distil, calibrate, cascade): the targets, printed.

On the shared data (Reuters R8, Rotten Tomatoes) with the replay teacher in its own process
at 300 ms per call and GPT-4o list prices, α = 0.02, δ = 0.05:

* share of test requests answered locally, realised disagreement with the teacher on those,
  cascade accuracy on gold vs teacher-only;
* the guarantee over 100 random calibration/test resplits (share of resplits whose realised
  disagreement on answered test rows is ≤ α; the guarantee says ≥ 1 − δ = 95 %);
* cost per 1k requests and p50/p95 latency, cascade vs teacher-only.

    python benchmarks/bench_cascade.py [--student auto|tfidf|minilm] [--teacher-noise 0.0]
                                      [--latency-ms 300] [--datasets reuters_r8 rotten_tomatoes]

Writes benchmarks/results/cascade-<dataset>-<student>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import json
import sys
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from downsize.calibration import ThresholdCalibrator
from downsize.data import read_texts
from downsize.errors import CalibrationError
from downsize.evaluation import evaluate_file
from downsize.project import Project, percentile
from downsize.replay import ReplayProcess
from downsize.training import load_student_version

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
PRICE_IN, PRICE_OUT = 2.50, 10.00  # GPT-4o list price, $ per 1M tokens

LABELS = {
    "reuters_r8": {"earn": "earnings", "acq": "acquisitions", "crude": "crude oil", "trade": "trade",
                   "money-fx": "money markets and FX", "interest": "interest rates", "ship": "shipping",
                   "grain": "grain"},
    "rotten_tomatoes": {"positive": "a favourable review", "negative": "an unfavourable review"},
}


def _files(name: str) -> tuple[Path, Path]:
    tr, te = SHARED / f"{name}-train.csv.gz", SHARED / f"{name}-test.csv.gz"
    if not tr.exists():
        sys.exit(f"{tr} not found: the benchmark reads the full data from ../shared/data")
    return tr, te


def _write_csv(path: Path, texts: list[str], labels: list[str] | None = None) -> Path:
    with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"] if labels is not None else ["text"])
        for i, t in enumerate(texts):
            w.writerow([t, labels[i]] if labels is not None else [t])
    return path


CONFIG = """\
store: sqlite:///.downsize/downsize.db
teachers:
  default:
    base_url: {url}
    model: replay-gpt-4o
    price_per_1m_input: {pin}
    price_per_1m_output: {pout}
    max_concurrency: 32
    timeout_s: 30
    max_retries: 4
tasks:
  bench:
    instructions: Classify the text.
    labels: {labels}
    alpha: {alpha}
    delta: {delta}
    student: {student}
"""


def resplits(student, cal_texts, cal_ref, test_texts, test_ref, alpha, delta, bound, n=100, seed=0) -> dict:
    """Re-draw calibration/test from the pooled held-out rows n times; how often does the bound hold?"""
    X = list(cal_texts) + list(test_texts)
    ref = np.asarray(list(cal_ref) + list(test_ref))
    proba = student.predict_proba(X)
    conf = proba.max(1)
    correct = student.classes_[proba.argmax(1)] == ref
    n_cal = len(cal_texts)
    rng = np.random.default_rng(seed)
    held, risks, covs, none = 0, [], [], 0
    for _ in range(n):
        perm = rng.permutation(len(X))
        c, t = perm[:n_cal], perm[n_cal:]
        try:
            cal = ThresholdCalibrator(alpha=alpha, delta=delta, bound=bound).fit(conf[c], correct[c])
        except CalibrationError:
            none += 1
            held += 1
            continue
        if cal.threshold_ is None:
            none += 1
            held += 1  # nothing answered: zero risk
            covs.append(0.0)
            continue
        ans = conf[t] >= cal.threshold_
        risk = float(1 - correct[t][ans].mean()) if ans.any() else 0.0
        risks.append(risk)
        covs.append(float(ans.mean()))
        held += risk <= alpha
    return {"resplits": n, "held_share": held / n, "no_threshold": none,
            "risk_mean": float(np.mean(risks)) if risks else None,
            "risk_max": float(np.max(risks)) if risks else None,
            "coverage_mean": float(np.mean(covs)) if covs else 0.0}


def run(name: str, student: str, alpha: float, delta: float, latency_ms: float, noise: float,
        workdir: Path | None = None, report: Path | None = None) -> dict:
    tr_path, te_path = _files(name)
    tr, te = read_texts(tr_path, label_col="label"), read_texts(te_path, label_col="label")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) if workdir is None else workdir
        if workdir is not None:
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
        allp = _write_csv(d / "teacher.csv.gz", tr.texts + te.texts, (tr.labels or []) + (te.labels or []))
        _write_csv(d / "train.csv.gz", tr.texts)
        _write_csv(d / "test.csv.gz", te.texts, te.labels)
        with ReplayProcess(allp, latency_ms=latency_ms, noise=noise, seed=7) as srv:
            (d / "downsize.yaml").write_text(CONFIG.format(
                url=srv.base_url, pin=PRICE_IN, pout=PRICE_OUT, labels=json.dumps(LABELS[name]),
                alpha=alpha, delta=delta, student=student))
            with Project.open(d / "downsize.yaml") as p:
                t0 = time.perf_counter()
                ls = p.label("bench", d / "train.csv.gz")
                label_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                trn = p.train("bench")
                train_s = time.perf_counter() - t0
                run_, cal = p.calibrate("bench")
                print(run_.details["guarantee"])
                ps = p.predict("bench", d / "test.csv.gz", d / "pred.csv")
                ev = evaluate_file(p, "bench", d / "test.csv.gz", progress=False)
                lat_t = p.teacher_latencies("bench")
                # teacher answers (cached now) for the resplit check
                sv = p.store.latest_student("bench")
                st = load_student_version(sv, p.config.home_dir())
                cal_ids = set(sv.calib_example_ids)
                cal_ex = [e for e in p.store.labelled_examples("bench") if e.example_id in cal_ids]

                async def teacher_labels(texts):
                    task = p.config.task("bench")
                    async with p.teacher("bench") as t:
                        return [a.answer for a in await asyncio.gather(
                            *(t.ask(x, task_name="bench", task=task) for x in texts))]

                t_test = asyncio.run(teacher_labels(te.texts))
                ok = [i for i, l in enumerate(t_test) if l is not None]
                rs = resplits(st, [e.text for e in cal_ex], [e.label for e in cal_ex],
                              [te.texts[i] for i in ok], [t_test[i] for i in ok], alpha, delta,
                              p.config.task("bench").bound)
                # student alone on every test row: agreement with the teacher, single-request latency, CPU energy
                c0 = time.process_time()
                s_pred = st.predict(te.texts)
                cpu_ms_row = (time.process_time() - c0) * 1000 / len(te.texts)
                single = []
                for x in te.texts[:300]:
                    t1 = time.perf_counter()
                    st.predict_proba([x])
                    single.append((time.perf_counter() - t1) * 1000)
                s_agree = float(np.mean([a == b for a, b in zip(s_pred, t_test) if b is not None]))
                tokens_in, tokens_out = p.teacher_token_estimate("bench")
                energy = p.config.energy
                student_wh = cpu_ms_row / 3.6e6 * energy.cpu_watts_per_core  # ms·W → Wh
                teacher_wh = (tokens_in + tokens_out) / 1000 * energy.teacher_wh_per_1k_tokens
                escalated = 1 - ps.share_local
                if report is not None:
                    from downsize.report import write_report

                    write_report(p.store, p.config, report)
    local_agree = ev.cascade.get("student_agreement_with_teacher_on_local") if ev.cascade else None
    out = {
        "dataset": name, "student": trn.kind, "alpha": alpha, "delta": delta, "teacher_noise": noise,
        "teacher_latency_ms": latency_ms, "n_train": len(tr), "n_test": len(te),
        "label_seconds": label_s, "label_rows_per_s": ls.labelled / label_s if label_s else None,
        "train_seconds": train_s, "student_size_mb": trn.size_bytes / 1e6,
        "threshold": run_.threshold, "calib_coverage": run_.coverage, "n_calib": run_.n_calib,
        "share_local": ps.share_local,
        "realised_disagreement_local": None if local_agree is None else 1 - local_agree,
        "accuracy": {"student": ev.student["accuracy"], "teacher": ev.teacher["accuracy"] if ev.teacher else None,
                     "cascade": ev.cascade["accuracy"] if ev.cascade else None},
        "macro_f1": {"student": ev.student["macro_f1"], "teacher": ev.teacher["macro_f1"] if ev.teacher else None,
                     "cascade": ev.cascade["macro_f1"] if ev.cascade else None},
        "cost_per_1k_usd": {"cascade": 1000 * ps.cost_usd / ps.rows, "teacher_only": 1000 * ps.teacher_only_cost_usd / ps.rows},
        "latency_ms": {"cascade_p50": ps.latency_p50_ms, "cascade_p95": ps.latency_p95_ms,
                       "teacher_p50": percentile(lat_t, 50), "teacher_p95": percentile(lat_t, 95)},
        "student_latency_ms": {"p50": ev.student_latency_p50_ms, "p99": ev.student_latency_p99_ms},
        "student_batch_rows_per_s": ev.student_batch_rows_per_s,
        "resplits": rs,
        "student_only": {"agreement_with_teacher": s_agree, "latency_p50_ms": percentile(single, 50),
                         "latency_p95_ms": percentile(single, 95), "cpu_ms_per_row": cpu_ms_row},
        "energy_wh_per_1k": {
            "student_only": 1000 * student_wh,
            "teacher_only": 1000 * teacher_wh,
            "cascade": 1000 * (student_wh + escalated * teacher_wh),
            "basis": f"student measured: CPU time x {energy.cpu_watts_per_core:g} W/core; teacher estimated: "
                     f"{tokens_in + tokens_out:.0f} tokens/call x {energy.teacher_wh_per_1k_tokens:g} Wh/1k tokens",
        },
    }
    return out


def parse_args(doc: str | None) -> argparse.Namespace:
    """The options shared by this script and run_all.py."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["reuters_r8", "rotten_tomatoes"])
    ap.add_argument("--student", default="auto")
    ap.add_argument("--alpha", type=float, default=0.02)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--latency-ms", type=float, default=300.0)
    ap.add_argument("--teacher-noise", type=float, default=0.0)
    return ap.parse_args()


def main() -> None:
    a = parse_args(__doc__)
    RESULTS.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in a.datasets:
        r = run(name, a.student, a.alpha, a.delta, a.latency_ms, a.teacher_noise)
        tag = f"cascade-{name}-{a.student}" + (f"-noise{a.teacher_noise:g}" if a.teacher_noise else "")
        (RESULTS / f"{tag}.json").write_text(json.dumps(r, indent=2))
        rows.append(r)
    print()
    hdr = ("dataset", "student", "local", "disagree(local)", "acc cascade", "acc teacher", "casc/teach",
           "resplits ok", "$/1k casc", "$/1k teach", "p50 casc ms", "p50 teach ms", "train s")
    print(" | ".join(hdr))
    for r in rows:
        acc = r["accuracy"]
        print(" | ".join([
            r["dataset"], r["student"], f"{r['share_local']:.1%}",
            "–" if r["realised_disagreement_local"] is None else f"{r['realised_disagreement_local']:.2%}",
            f"{acc['cascade']:.2%}", f"{acc['teacher']:.2%}", f"{acc['cascade'] / acc['teacher']:.1%}",
            f"{r['resplits']['held_share']:.0%}", f"{r['cost_per_1k_usd']['cascade']:.3f}",
            f"{r['cost_per_1k_usd']['teacher_only']:.3f}", f"{r['latency_ms']['cascade_p50']:.2f}",
            f"{r['latency_ms']['teacher_p50']:.0f}", f"{r['train_seconds']:.1f}",
        ]))


if __name__ == "__main__":
    main()
