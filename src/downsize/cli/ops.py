"""Running and watching: serve, report, demo, the replay teacher, the audit log, API keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ._common import ConfigOpt, _errors, _fmt, _project, _store, app, console, err_console, keys_app, log_app, teacher_app



@teacher_app.command("replay")
@_errors
def teacher_replay(
    data: Annotated[Path, typer.Argument(help="File with recorded answers (a text and an answer column).")],
    text_col: Annotated[str, typer.Option()] = "text",
    label_col: Annotated[str, typer.Option(
        "--answer-col", "--label-col",
        help="The recorded answers: a label, or (JSONL) labels / fields / entities.")] = "label",
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8001,
    latency_ms: Annotated[float, typer.Option(help="Delay before each answer.")] = 0.0,
    error_rate: Annotated[float, typer.Option(help="Fraction of requests answered with HTTP 500.")] = 0.0,
    noise: Annotated[float, typer.Option(
        help="Fraction of texts answered wrongly (seeded): another label; a label, field or mention dropped "
             "or altered.")] = 0.0,
    seed: Annotated[int, typer.Option()] = 0,
    pool: Annotated[Path | None, typer.Option(
        help="Recorded examples (same columns) that `downsize synth` generation requests are answered from, "
             "by label: keep them apart from the training data.")] = None,
) -> None:
    """Serve recorded answers over the OpenAI protocol: a teacher for distilling from logs or labels."""
    from ..replay import serve_replay

    serve_replay(data, text_col=text_col, label_col=label_col, host=host, port=port,
                 latency_ms=latency_ms, error_rate=error_rate, noise=noise, seed=seed, pool=pool)


@app.command()
@_errors
def report(
    tasks: Annotated[list[str] | None, typer.Argument(help="Tasks to include (default: all, plus pass-through).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the report.")] = Path("downsize-report.html"),
    since: Annotated[str | None, typer.Option(help="Only the last 7d, 12h, 30m, 2w…, or since an ISO date (UTC).")] = None,
    fmt: Annotated[str, typer.Option("--format", help="html | json | text")] = "html",
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Quality, savings, latency and energy per task: one self-contained HTML page (or JSON)."""
    from ..audit import parse_since
    from ..report import build_report, render_text, write_report
    from ..store import utcnow

    if fmt not in ("html", "json", "text"):
        raise typer.BadParameter("--format must be html, json or text")
    now = utcnow()
    window = now - parse_since(since, now=now) if since else None
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
    from ..demo import run_demo

    run_demo(directory, teacher_latency_ms=teacher_latency_ms, student=student, console=console)


# ---------------------------------------------------------------------------------------
# the gateway: serve, its audit log and its API keys
# ---------------------------------------------------------------------------------------


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
    from ..server import serve as run_gateway

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


def _print_events(store: Any, task: str | None, limit: int = 10) -> None:
    """The task's latest lifecycle events (suspended, promoted, gate refused...), with why."""
    from ..lifecycle import events

    evs = events(store, task, limit=limit)
    if not evs:
        return
    t = Table(title="task events (newest first)")
    for c in ("time (UTC)", "task", "event", "version", "why"):
        t.add_column(c, overflow="fold")
    for e in evs:
        style = "bold red" if e.kind == "suspended" else ""
        t.add_row(e.ts.strftime("%Y-%m-%d %H:%M:%S"), e.task, f"[{style}]{e.kind}[/]" if style else e.kind,
                  f"#{e.student_version_id}" if e.student_version_id else "–", e.message[:300])
    console.print(t)


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

    from ..audit import read_log

    with _store(config) as store:
        rows = read_log(store, task=task, last=n)
        console.print(_log_table(rows, f"audit log: last {len(rows)} row(s)" + (f" of {task}" if task else "")))
        _print_events(store, task)
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
    from ..audit import export_log, parse_since

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
    from ..server.keys import create_key

    with _store(config) as store:
        k = create_key(store, name)
    err_console.print(f"created {k.key_id} ({k.name}); the key is shown only now, store it safely:")
    typer.echo(k.secret)


@keys_app.command("list")
@_errors
def keys_list(config: ConfigOpt = Path("downsize.yaml")) -> None:
    """List API keys (ids and names; secrets are not stored)."""
    from ..server.keys import list_keys

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
    from ..server.keys import revoke_key

    with _store(config) as store:
        k = revoke_key(store, key_id)
    console.print(f"revoked {k.key_id} ({k.name}) at {k.revoked_at:%Y-%m-%d %H:%M:%S} UTC")

