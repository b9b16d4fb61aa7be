"""The benchmark suite (not run in CI): the cascade on both shared datasets, one comparison table.

    python benchmarks/run_all.py [--teacher-noise 0.1] [--student auto] [--latency-ms 300]

For each dataset in ../shared/data it labels the training split through the replay teacher (its
own process, 300 ms per call, GPT-4o list prices), trains and calibrates at α = 0.02, δ = 0.05,
answers the test split through the cascade, evaluates against gold, writes
``benchmarks/results/run_all-<dataset>.json`` and ``benchmarks/results/report-<dataset>.html``,
and prints teacher-only vs student-only vs cascade: accuracy on gold, agreement with the teacher,
share answered locally, $ per 1k requests, p50/p95 latency, energy per 1k requests.
``--teacher-noise`` makes the replay teacher give a wrong label for that share of texts (seeded):
the guarantee is then about agreement with a teacher that is itself sometimes wrong.
"""

from __future__ import annotations

import json
import math

from bench_cascade import RESULTS, parse_args, run


def _row(mode: str, r: dict) -> list[str]:
    acc, lat, cost, en = r["accuracy"], r["latency_ms"], r["cost_per_1k_usd"], r["energy_wh_per_1k"]
    so = r["student_only"]
    if mode == "teacher only":
        vals = (acc["teacher"], 1.0, 0.0, cost["teacher_only"], lat["teacher_p50"], lat["teacher_p95"], en["teacher_only"])
    elif mode == "student only":
        vals = (acc["student"], so["agreement_with_teacher"], 1.0, 0.0, so["latency_p50_ms"], so["latency_p95_ms"],
                en["student_only"])
    else:
        local = r["share_local"]
        dis = r["realised_disagreement_local"]
        dis = 0.0 if dis is None or math.isnan(dis) else dis  # nothing answered locally: nothing to disagree on
        agree = local * (1 - dis) + (1 - local)
        vals = (acc["cascade"], agree, local, cost["cascade"], lat["cascade_p50"], lat["cascade_p95"], en["cascade"])
    a, g, loc, c, p50, p95, e = vals
    return [r["dataset"], mode, f"{a:.2%}", f"{g:.2%}", f"{loc:.1%}", f"${c:.3f}", f"{p50:,.2f}", f"{p95:,.1f}", f"{e:.3f}"]


def main() -> None:
    a = parse_args(__doc__)
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = f"-noise{a.teacher_noise:g}" if a.teacher_noise else ""
    results = []
    for name in a.datasets:
        r = run(name, a.student, a.alpha, a.delta, a.latency_ms, a.teacher_noise,
                workdir=RESULTS / f"work-{name}{suffix}", report=RESULTS / f"report-{name}{suffix}.html")
        (RESULTS / f"run_all-{name}{suffix}.json").write_text(json.dumps(r, indent=2))
        results.append(r)
    head = ["dataset", "mode", "acc (gold)", "agree (teacher)", "local", "$ / 1k", "p50 ms", "p95 ms", "Wh / 1k"]
    rows = [_row(m, r) for r in results for m in ("teacher only", "student only", "cascade")]
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    fmt = " | ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    print(f"\nα={a.alpha}, δ={a.delta}, teacher latency {a.latency_ms:g} ms, teacher noise {a.teacher_noise:g}")
    print(fmt.format(*head))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(fmt.format(*row))
    print("energy: " + results[0]["energy_wh_per_1k"]["basis"] if results else "")


if __name__ == "__main__":
    main()
