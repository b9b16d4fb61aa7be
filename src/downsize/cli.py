"""The ``downsize`` command line: one function per command, each a thin wrapper over the Python API.

Parse arguments → open the project → call one library function → render → exit code.
Errors are mapped to exit codes here and only here.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from .errors import BudgetExceeded, ConfigError, DataError, DownsizeError, TeacherError

app = typer.Typer(
    name="downsize",
    help="Distil routine LLM calls into small local models that answer only when they provably may.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
teacher_app = typer.Typer(help="Teacher utilities (the replay teacher).", no_args_is_help=True)
app.add_typer(teacher_app, name="teacher")

console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

ConfigOpt = Annotated[
    Path,
    typer.Option("--config", "-c", help="The project's downsize.yaml.", envvar="DOWNSIZE_CONFIG"),
]
_EXIT = {ConfigError: 2, DataError: 2, TeacherError: 3, BudgetExceeded: 4}


def _errors(fn: F) -> F:
    """Turn DownsizeError into a one-line message and an exit code (2 input, 3 teacher, 4 budget, 1 other)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DownsizeError as exc:
            code = next((c for t, c in _EXIT.items() if isinstance(exc, t)), 1)
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]


def _project(config: Path) -> Any:
    from .project import Project

    return Project.open(config)


def _fmt(x: float | None, spec: str = ".1f", suffix: str = "") -> str:
    return "–" if x is None else f"{x:{spec}}{suffix}"


def main() -> None:
    app()


# ---------------------------------------------------------------------------------------
@app.command()
@_errors
def init(path: Annotated[Path, typer.Argument(help="Where to write the config.")] = Path("downsize.yaml")) -> None:
    """Write a commented downsize.yaml template."""
    from .config import write_template

    write_template(path)
    console.print(f"wrote {path}: edit the teacher and the task, then run [bold]downsize label[/]")


@app.command()
@_errors
def label(
    task: Annotated[str, typer.Argument(help="Task name from downsize.yaml.")],
    data: Annotated[Path, typer.Argument(help="CSV, JSONL or Parquet file of unlabelled rows.")],
    text_col: Annotated[str | None, typer.Option(help="Column with the text (default: the task's text_field).")] = None,
    limit: Annotated[int | None, typer.Option(help="Label at most this many rows.")] = None,
    budget: Annotated[float | None, typer.Option(help="Stop before spending more than this many dollars.")] = None,
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Have the teacher label a file. Resumable: only rows without a label are sent."""
    with _project(config) as p:
        summary = p.label(task, data, text_col=text_col, limit=limit, budget_usd=budget)
    console.print(summary.render())
    if summary.stopped_reason == "budget":
        raise typer.Exit(4)
    if summary.stopped_reason == "interrupted":
        err_console.print("interrupted: run the same command again to label the rest (nothing is paid twice)")
        raise typer.Exit(130)


@app.command("add-labels")
@_errors
def add_labels(
    task: Annotated[str, typer.Argument()],
    data: Annotated[Path, typer.Argument(help="File with a text and a label column.")],
    label_col: Annotated[str, typer.Option(help="Column with the labels.")] = "label",
    text_col: Annotated[str | None, typer.Option()] = None,
    source: Annotated[str, typer.Option(help="human (corrections) or gold.")] = "human",
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Import human corrections or gold labels; they override the teacher's labels."""
    if source not in ("human", "gold"):
        raise typer.BadParameter("--source must be human or gold")
    with _project(config) as p:
        n = p.add_gold(task, data, text_col=text_col, label_col=label_col, source=source)
    console.print(f"added {n} {source} labels to {task}")


@app.command()
@_errors
def train(
    task: Annotated[str, typer.Argument()],
    student: Annotated[str | None, typer.Option(help="auto | tfidf | minilm (default: the task's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the train/calibration split.")] = 0,
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Train a new student version on the task's labels, holding out a calibration split."""
    with _project(config) as p, console.status(f"training {task}…"):
        r = p.train(task, kind=student, seed=seed)
    t = Table(title=f"{task}: student v{r.version} ({r.kind})", show_header=False)
    t.add_row("trained on", f"{r.n_train:,} rows ({len(r.label_counts)} labels); {r.n_calib:,} held out for calibration")
    t.add_row("train time", f"{r.train_seconds:.2f} s")
    t.add_row("size on disk", f"{r.size_bytes / 1e6:.2f} MB")
    t.add_row("held-out agreement with labels", f"{r.holdout_agreement:.1%}")
    t.add_row("choice", r.selection_reason)
    t.add_row("saved to", r.path)
    console.print(t)
    console.print(f"next: [bold]downsize calibrate {task}[/]")


@app.command()
@_errors
def calibrate(
    task: Annotated[str, typer.Argument()],
    alpha: Annotated[float | None, typer.Option(help="Max disagreement rate on answered requests.")] = None,
    delta: Annotated[float | None, typer.Option(help="The guarantee holds with probability 1-delta.")] = None,
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Pick the confidence threshold with a finite-sample guarantee (Learn-then-Test)."""
    with _project(config) as p:
        run, cal = p.calibrate(task, alpha=alpha, delta=delta)
    t = Table(title=f"{task}: calibration (student v{run.details.get('student_version')})", show_header=False)
    t.add_row("target", f"disagreement ≤ {run.alpha:.1%} with probability ≥ {1 - run.delta:.0%}")
    t.add_row("relative to", f"{run.reference} labels on {run.n_calib:,} held-out rows")
    if run.threshold is None:
        t.add_row("threshold", "[red]none qualifies[/]: every request stays on the teacher")
    else:
        t.add_row("threshold λ", f"{run.threshold:.4f}")
        t.add_row("answered locally", f"{run.coverage:.1%} (interval {run.coverage_lo:.1%}–{run.coverage_hi:.1%})")
        t.add_row("errors among answered", f"{run.errors_answered} of {run.n_answered}")
    console.print(t)
    console.print(run.details.get("guarantee", ""), highlight=False)


@app.command()
@_errors
def predict(
    task: Annotated[str, typer.Argument()],
    data: Annotated[Path, typer.Argument(help="File of rows to answer.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output CSV/JSONL.")],
    text_col: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int | None, typer.Option()] = None,
    budget: Annotated[float | None, typer.Option(help="Dollar cap on teacher calls for escalations.")] = None,
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Answer a file through the cascade: student when it may, teacher otherwise."""
    with _project(config) as p:
        s = p.predict(task, data, output, text_col=text_col, limit=limit, budget_usd=budget)
    t = Table(title=f"{task}: {s.rows:,} rows → {s.output}")
    t.add_column("")
    t.add_column("cascade", justify="right")
    t.add_column("teacher only", justify="right")
    t.add_row("answered locally", f"{s.share_local:.1%}", "0%")
    t.add_row("teacher calls", f"{s.rows - s.teacher_calls_saved:,}", f"{s.rows:,}")
    t.add_row("cost $", f"{s.cost_usd:.4f}", f"{s.teacher_only_cost_usd:.4f}")
    t.add_row("latency p50 ms", _fmt(s.latency_p50_ms, ".2f"), _fmt(s.teacher_only_latency_p50_ms, ".1f"))
    t.add_row("latency p95 ms", _fmt(s.latency_p95_ms, ".2f"), _fmt(s.teacher_only_latency_p95_ms, ".1f"))
    console.print(t)
    console.print(f"answered by: {s.answered_by}; student agrees with the teacher on "
                  f"{_fmt(None if s.escalated_agreement is None else 100 * s.escalated_agreement, '.1f', '%')} of escalated rows")


@app.command("eval")
@_errors
def eval_(
    task: Annotated[str, typer.Argument()],
    data: Annotated[Path, typer.Argument(help="File with text and gold labels.")],
    gold_col: Annotated[str, typer.Option(help="Column with the gold labels.")] = "label",
    text_col: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int | None, typer.Option()] = None,
    teacher: Annotated[bool, typer.Option(help="Also ask the teacher (cached) for teacher/cascade figures.")] = True,
    plot: Annotated[Path | None, typer.Option(help="Write the coverage–accuracy curve as a PNG.")] = None,
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Accuracy and macro-F1 vs gold: student alone, teacher alone and the cascade."""
    from .evaluation import evaluate_file

    with _project(config) as p:
        r = evaluate_file(p, task, data, gold_col=gold_col, text_col=text_col, limit=limit,
                          use_teacher=teacher, plot=plot)
    t = Table(title=f"{task}: evaluation on {r.n:,} gold rows")
    for c in ("", "accuracy", "macro-F1", "answered locally"):
        t.add_column(c, justify="right")
    t.add_row("student alone", f"{r.student['accuracy']:.2%}", f"{r.student['macro_f1']:.3f}", "100%")
    if r.teacher:
        t.add_row("teacher alone", f"{r.teacher['accuracy']:.2%}", f"{r.teacher['macro_f1']:.3f}", "0%")
    if r.cascade:
        t.add_row("cascade", f"{r.cascade['accuracy']:.2%}", f"{r.cascade['macro_f1']:.3f}", f"{r.cascade['share_local']:.1%}")
    console.print(t)
    c = Table(title="coverage vs accuracy over thresholds")
    for col in ("threshold", "coverage", "student acc. (answered)", "cascade acc."):
        c.add_column(col, justify="right")
    for row in r.curve:
        c.add_row(f"{row['threshold']:.4f}", f"{row['coverage']:.1%}", f"{row['student_accuracy_answered']:.2%}",
                  f"{row['cascade_accuracy']:.2%}" if "cascade_accuracy" in row else "–")
    console.print(c)
    console.print(f"student latency p50 {r.student_latency_p50_ms:.2f} ms, p99 {r.student_latency_p99_ms:.2f} ms "
                  f"per row; batch {r.student_batch_rows_per_s:,.0f} rows/s")
    if r.plot:
        console.print(f"plot: {r.plot}")


@app.command()
@_errors
def status(config: ConfigOpt = Path("downsize.yaml")) -> None:
    """Labels, students and thresholds per task."""
    with _project(config) as p:
        rows = p.status()
    t = Table(title="downsize status")
    for c in ("task", "labelled", "student", "threshold", "coverage", "teacher $"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["task"], f"{r['labelled']:,}", r["student"] or "–", _fmt(r["threshold"], ".4f"),
                  _fmt(None if r["coverage"] is None else 100 * r["coverage"], ".1f", "%"), f"{r['spend_usd']:.4f}")
    console.print(t)


@teacher_app.command("replay")
@_errors
def teacher_replay(
    data: Annotated[Path, typer.Argument(help="File with recorded answers (text + label columns).")],
    text_col: Annotated[str, typer.Option()] = "text",
    label_col: Annotated[str, typer.Option()] = "label",
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8001,
    latency_ms: Annotated[float, typer.Option(help="Delay before each answer.")] = 0.0,
    error_rate: Annotated[float, typer.Option(help="Fraction of requests answered with HTTP 500.")] = 0.0,
    noise: Annotated[float, typer.Option(help="Fraction of texts answered with a wrong label (seeded).")] = 0.0,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Serve recorded answers over the OpenAI protocol: a teacher for distilling from logs or labels."""
    from .replay import serve_replay

    serve_replay(data, text_col=text_col, label_col=label_col, host=host, port=port,
                 latency_ms=latency_ms, error_rate=error_rate, noise=noise, seed=seed)


@app.command()
@_errors
def report(
    tasks: Annotated[list[str] | None, typer.Argument(help="Tasks to include (default: all, plus pass-through).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the report.")] = Path("downsize-report.html"),
    since: Annotated[str | None, typer.Option(help="Only the last 7d, 12h, 30m, 2w…")] = None,
    fmt: Annotated[str, typer.Option("--format", help="html | json | text")] = "html",
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Quality, savings, latency and energy per task: one self-contained HTML page (or JSON)."""
    from .report import build_report, parse_duration, render_text, write_report

    if fmt not in ("html", "json", "text"):
        raise typer.BadParameter("--format must be html, json or text")
    try:
        window = parse_duration(since) if since else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    with _project(config) as p:
        rep = build_report(p.store, p.config, tasks=tasks or None, since=window)
        path = write_report(p.store, p.config, output, format=fmt, report=rep)
    console.print(render_text(rep), markup=False, highlight=False)
    console.print(f"report: {path}")


@app.command()
@_errors
def demo(
    directory: Annotated[Path, typer.Option("--dir", help="Where to write the demo project.")] = Path("downsize-demo"),
    teacher_latency_ms: Annotated[float, typer.Option(help="Simulated teacher latency.")] = 300.0,
    student: Annotated[str, typer.Option(help="auto | tfidf | minilm")] = "auto",
) -> None:
    """Run the whole loop offline on bundled Reuters data: label, train, calibrate, cascade, report."""
    from .demo import run_demo

    run_demo(directory, teacher_latency_ms=teacher_latency_ms, student=student, console=console)


# ---------------------------------------------------------------------------------------
# the gateway: serve, its audit log and its API keys
# ---------------------------------------------------------------------------------------
log_app = typer.Typer(help="The audit log: one row per request the gateway or `predict` answered.",
                      no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the gateway (stored as sha256 only).", no_args_is_help=True)
app.add_typer(log_app, name="log")
app.add_typer(keys_app, name="keys")


def _store(config: Path) -> Any:
    """The project's store alone (no students, no teacher): for `log` and `keys`."""
    from .config import load_config
    from .store import Store

    return Store(load_config(config).store_url())


@app.command()
@_errors
def serve(
    config: ConfigOpt = Path("downsize.yaml"),
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (the rate limit is split between them).")] = 1,
    insecure_no_auth: Annotated[bool, typer.Option("--insecure-no-auth",
                                                   help="Accept requests without an API key.")] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    access_log: Annotated[bool, typer.Option(help="uvicorn's access log (the audit log has every request).")] = False,
) -> None:
    """Serve the OpenAI-compatible gateway: point the OpenAI SDK's base_url at http://HOST:PORT/v1."""
    from .server import serve as run_gateway

    run_gateway(config, host=host, port=port, workers=workers, auth=not insecure_no_auth, log_level=log_level,
                access_log=access_log)


def _log_table(rows: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title)
    for c in ("time (UTC)", "task", "answered by", "answer", "conf.", "ms", "$", "status", "key"):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*_log_cells(r))
    return t


def _log_cells(r: dict[str, Any]) -> list[str]:
    answer = (r["answer"] or "")[:40]
    return [r["ts"].strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], r["task"] or r["model"], r["answered_by"], answer,
            _fmt(r["confidence"], ".3f"), _fmt(r["latency_ms"], ".1f"), f"{r['teacher_cost_usd']:.6f}",
            str(r["status_code"]), r["client_key_id"] or "–"]


@log_app.command("tail")
@_errors
def log_tail(
    n: Annotated[int, typer.Option("-n", "--lines", min=1, help="How many of the latest rows.")] = 20,
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new rows (Ctrl-C stops).")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between polls with --follow.")] = 1.0,
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Show the latest audit-log rows."""
    import time as _time

    from .audit import read_log

    with _store(config) as store:
        rows = read_log(store, task=task, last=n)
        console.print(_log_table(rows, f"audit log: last {len(rows)} row(s)" + (f" of {task}" if task else "")))
        if not follow:
            return
        last_id = rows[-1]["id"] if rows else 0
        try:
            while True:
                _time.sleep(interval)
                for r in read_log(store, task=task, after_id=last_id):
                    console.print("  ".join(_log_cells(r)), highlight=False, soft_wrap=True)
                    last_id = r["id"]
        except KeyboardInterrupt:
            return


@log_app.command("export")
@_errors
def log_export(
    output: Annotated[Path, typer.Argument(help="OUT.csv, .tsv or .jsonl (optionally .gz).")],
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO date/time (UTC) or a span back: 30m, 2h, 7d.")] = None,
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Write the audit log (every column) to a file."""
    from .audit import export_log, parse_since

    with _store(config) as store:
        n = export_log(store, output, task=task, since=parse_since(since) if since else None)
    console.print(f"wrote {n:,} row(s) to {output}")


@keys_app.command("create")
@_errors
def keys_create(
    name: Annotated[str, typer.Argument(help="Who or what the key is for.")],
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Create an API key and print it once (only its sha256 is stored)."""
    from .keys import create_key

    with _store(config) as store:
        k = create_key(store, name)
    err_console.print(f"created {k.key_id} ({k.name}); the key is shown only now, store it safely:")
    typer.echo(k.secret)


@keys_app.command("list")
@_errors
def keys_list(config: ConfigOpt = Path("downsize.yaml")) -> None:
    """List API keys (ids and names; secrets are not stored)."""
    from .keys import list_keys

    with _store(config) as store:
        keys = list_keys(store)
    t = Table(title=f"{len(keys)} API key(s)")
    for c in ("key id", "name", "created (UTC)", "status"):
        t.add_column(c)
    for k in keys:
        status = "active" if k.active else f"revoked {k.revoked_at:%Y-%m-%d %H:%M}"
        t.add_row(k.key_id, k.name, f"{k.created_at:%Y-%m-%d %H:%M}", status)
    console.print(t)


@keys_app.command("revoke")
@_errors
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, as `keys list` shows it.")],
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Revoke an API key (a running gateway stops accepting it within 5 seconds)."""
    from .keys import revoke_key

    with _store(config) as store:
        k = revoke_key(store, key_id)
    console.print(f"revoked {k.key_id} ({k.name}) at {k.revoked_at:%Y-%m-%d %H:%M:%S} UTC")



if __name__ == "__main__":  # pragma: no cover
    main()
