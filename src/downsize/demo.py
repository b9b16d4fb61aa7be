"""``downsize demo``: the whole loop, offline, on bundled real data, in a couple of minutes.

A replay teacher serves recorded answers (the Reuters R8 topic labels) over the OpenAI
protocol with a realistic latency and GPT-4o list prices; downsize labels the training rows
through it, trains and calibrates a student at α = 2 %, answers the held-out rows through the
cascade, evaluates everything against gold, writes the report, and prints the before/after
table. Every figure is computed in the run.
"""

from __future__ import annotations

import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .errors import DownsizeError

__all__ = ["run_demo", "demo_data"]

_MARKER = ".downsize-demo"
#: GPT-4o list prices ($ per 1M tokens) at the time of writing: a GPT-4o-class teacher.
PRICE_IN, PRICE_OUT = 2.50, 10.00

_CONFIG = """\
# Written by `downsize demo`. The teacher is a replay of recorded answers (Reuters R8 topics)
# served over the OpenAI protocol on loopback, priced like GPT-4o.
store: sqlite:///.downsize/downsize.db
home: .downsize
teachers:
  default:
    base_url: {base_url}
    model: replay-gpt-4o
    price_per_1m_input: {pin}
    price_per_1m_output: {pout}
    max_concurrency: 32
    timeout_s: 10
    max_retries: 3
tasks:
  news:
    kind: classify
    teacher: default
    instructions: Route the newswire story to the desk that should handle it.
    labels:
      earn: company earnings, dividends and results
      acq: mergers, acquisitions, stake purchases
      crude: crude oil markets and production
      trade: international trade, tariffs, trade balances
      money-fx: money markets and foreign exchange
      interest: interest rates and central bank rate decisions
      ship: shipping, ports, vessels
      grain: grain and agricultural commodities
    text_field: text
    alpha: 0.02
    delta: 0.05
    student: {student}
"""


def demo_data() -> tuple[Path, Path]:
    """Paths of the bundled demo train and test files (text,label)."""
    base = resources.files("downsize") / "_assets"
    return Path(str(base / "reuters_r8_demo-train.csv.gz")), Path(str(base / "reuters_r8_demo-test.csv.gz"))


def _prepare(directory: Path) -> None:
    if directory.exists():
        if not (directory / _MARKER).exists():
            raise DownsizeError(f"{directory} exists and is not a downsize demo directory; pass --dir elsewhere")
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / _MARKER).write_text("created by `downsize demo`; recreated on every run\n")


def run_demo(directory: Path = Path("downsize-demo"), *, teacher_latency_ms: float = 300.0, student: str = "auto",
             console: Console | None = None) -> dict[str, Any]:
    """Run the demo in ``directory`` (recreated each run) and return its figures."""
    from .data import read_texts
    from .evaluation import evaluate_file
    from .project import Project, percentile
    from .replay import ReplayServer

    console = console or Console()
    t_start = time.perf_counter()
    directory = Path(directory).resolve()
    _prepare(directory)
    train_src, test_src = demo_data()
    train_path, test_path = directory / "incoming.csv.gz", directory / "gold-test.csv.gz"
    shutil.copyfile(train_src, train_path)
    shutil.copyfile(test_src, test_path)
    train, test = read_texts(train_path, label_col="label"), read_texts(test_path, label_col="label")
    records = {**dict(zip(train.texts, train.labels or [])), **dict(zip(test.texts, test.labels or []))}

    with ReplayServer(records, latency_ms=teacher_latency_ms) as server:
        (directory / "downsize.yaml").write_text(
            _CONFIG.format(base_url=server.base_url, pin=PRICE_IN, pout=PRICE_OUT, student=student))
        console.rule("[bold]downsize demo")
        console.print(f"project: {directory}\nteacher: replay of recorded answers at {server.base_url} "
                      f"({teacher_latency_ms:.0f} ms per call, priced as GPT-4o ${PRICE_IN}/${PRICE_OUT} per 1M tokens)")
        with Project.open(directory / "downsize.yaml") as p:
            console.rule(f"1. the teacher labels {len(train):,} unlabelled rows")
            summary = p.label("news", train_path)
            console.print(summary.render())

            console.rule("2. distil a student")
            with console.status("training…"):
                tr = p.train("news")
            console.print(f"student v{tr.version} [bold]{tr.kind}[/]: {tr.train_seconds:.1f} s to train, "
                          f"{tr.size_bytes / 1e6:.1f} MB, {tr.holdout_agreement:.1%} held-out agreement with the teacher")
            console.print(tr.selection_reason, highlight=False)

            console.rule("3. calibrate: disagree with the teacher on ≤ 2 % of answered requests, with 95 % confidence")
            run, cal = p.calibrate("news")
            console.print(run.details["guarantee"], highlight=False)

            console.rule(f"4. the cascade answers {len(test):,} new requests")
            ps = p.predict("news", test_path, directory / "predictions.csv")
            console.print(f"answered locally {ps.share_local:.1%}; escalated {ps.rows - ps.teacher_calls_saved}; "
                          f"predictions in {ps.output}")

            console.rule("5. evaluate against gold (teacher-only baseline included)")
            ev = evaluate_file(p, "news", test_path, plot=directory / "coverage-accuracy.png")

            from .report import write_report

            report_path = write_report(p.store, p.config, directory / "report.html")
            lat_t = p.teacher_latencies("news")

    n = ps.rows
    figures = {
        "teacher_only": {
            "accuracy": ev.teacher["accuracy"] if ev.teacher else None,
            "share_local": 0.0,
            "cost_per_1k_usd": 1000 * ps.teacher_only_cost_usd / n,
            "latency_p50_ms": percentile(lat_t, 50),
            "latency_p95_ms": percentile(lat_t, 95),
        },
        "cascade": {
            "accuracy": ev.cascade["accuracy"] if ev.cascade else None,
            "share_local": ps.share_local,
            "cost_per_1k_usd": 1000 * ps.cost_usd / n,
            "latency_p50_ms": ps.latency_p50_ms,
            "latency_p95_ms": ps.latency_p95_ms,
        },
        "student_alone_accuracy": ev.student["accuracy"],
        "threshold": run.threshold,
        "student": tr.kind,
        "report": str(report_path),
        "seconds": time.perf_counter() - t_start,
    }
    console.rule("before / after")
    t = Table(title=f"{n:,} held-out Reuters requests, gold labels (student alone: {ev.student['accuracy']:.1%})")
    t.add_column("")
    t.add_column("teacher only", justify="right")
    t.add_column("downsize cascade", justify="right")
    a, b = figures["teacher_only"], figures["cascade"]

    def pct(x: float | None) -> str:
        return "–" if x is None else f"{x:.1%}"

    def ms(x: float | None) -> str:
        return "–" if x is None else f"{x:,.1f} ms"

    t.add_row("accuracy on gold", pct(a["accuracy"]), pct(b["accuracy"]))
    t.add_row("answered locally", pct(a["share_local"]), pct(b["share_local"]))
    t.add_row("cost per 1k requests", f"${a['cost_per_1k_usd']:.3f}", f"${b['cost_per_1k_usd']:.3f}")
    t.add_row("p50 latency", ms(a["latency_p50_ms"]), ms(b["latency_p50_ms"]))
    t.add_row("p95 latency", ms(a["latency_p95_ms"]), ms(b["latency_p95_ms"]))
    console.print(t)
    console.print(f"report: [bold]{report_path}[/]")
    console.print(f"plot: {ev.plot}\ndemo took {figures['seconds']:.0f} s")
    return figures
