"""A task's versions after its first calibration: retrain, versions, promote, rollback, resume."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ._common import ConfigOpt, _errors, _fmt, _project, app, console, err_console


@app.command()
@_errors
def retrain(
    task: Annotated[str, typer.Argument()],
    recalibrate: Annotated[bool | None, typer.Option(
        "--recalibrate/--train",
        help="--recalibrate: keep the live student, recalibrate it on the recent window; --train: insist on "
        "a new student. Default: train when there are enough fresh labels, else recalibrate.")] = None,
    promote: Annotated[bool, typer.Option(help="Put it live when it passes the gate.")] = True,
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Train a candidate on recent labels, calibrate it on fresher ones, promote it if it certifies alpha."""
    with _project(config) as p:
        with console.status(f"retraining {task}..."):
            res = p.retrain(task, recalibrate=recalibrate, promote=promote, actor="cli")
    colour = "green" if res.passed else "red"
    console.print(f"[{colour}]{res.message}[/]", highlight=False, soft_wrap=True)
    console.print(f"trained on {res.n_train:,} labels up to label #{res.cutoff_label_id}; calibrated on {res.n_calib:,} "
                  f"newer shadow labels; threshold {_fmt(res.threshold, '.4f')}, {res.coverage:.1%} answered",
                  highlight=False)
    if not res.passed:
        raise typer.Exit(1)


@app.command()
@_errors
def versions(task: Annotated[str, typer.Argument()], config: ConfigOpt = Path("downsize.yaml")) -> None:
    """Every student version of a task: how it was made, its calibration, the gate, which one is live."""
    with _project(config) as p:
        rows = p.versions(task)
    t = Table(title=f"{task}: student versions")
    for c in ("v", "live", "kind", "made by", "trained on", "calibration", "threshold", "answered", "gate"):
        t.add_column(c)
    for r in rows:
        live = ("[bold red]SUSPENDED[/]" if r["state"] == "suspended" else "[bold green]live[/]") if r["live"] else ""
        cal = "–" if r["calibration_run_id"] is None else \
            f"#{r['calibration_run_id']} ({r['n_calib']:,} {'fresh ' if r['fresh'] else ''}rows)"
        gate = "–" if r["gate"] is None else ("passed" if r["gate"] else "[red]refused[/]")
        t.add_row(f"v{r['version']}", live, r["kind"], r["origin"], f"{r['n_train']:,}", cal,
                  _fmt(r["threshold"], ".4f"), _fmt(None if r["coverage"] is None else 100 * r["coverage"], ".1f", "%"),
                  gate)
    console.print(t)


@app.command()
@_errors
def promote(
    task: Annotated[str, typer.Argument()],
    version: Annotated[int, typer.Argument(help="The version number (see `downsize versions`).")],
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Put a version live, if its calibration certifies the task's alpha and its files check out."""
    with _project(config) as p:
        ev = p.promote(task, version, actor="cli")
    console.print(f"[green]{ev.message}[/]; every gateway worker picks it up within seconds", highlight=False)


@app.command()
@_errors
def rollback(task: Annotated[str, typer.Argument()], config: ConfigOpt = Path("downsize.yaml")) -> None:
    """Put back the version that was live before the current one."""
    with _project(config) as p:
        ev = p.rollback(task, actor="cli")
    console.print(f"[green]{ev.message}[/]", highlight=False)


@app.command()
@_errors
def resume(
    task: Annotated[str, typer.Argument()],
    yes: Annotated[bool, typer.Option("--yes", help="Accept the risk without the question.")] = False,
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Serve a suspended task's student again without a new version (says what it risks first)."""
    from .. import lifecycle

    with _project(config) as p:
        now = lifecycle.live(p.store, task)
        if not now.suspended:
            err_console.print(f"task {task!r} is not suspended; nothing to resume")
            raise typer.Exit(1)
        console.print(f"[bold]{task}[/] is suspended: {now.reason}", highlight=False, soft_wrap=True)
        console.print("[yellow]Resuming serves the same student and threshold again with no new evidence that "
                      "the guarantee holds; `downsize retrain` is the way that keeps it.[/]")
        if not yes and not typer.confirm("Resume anyway?", default=False):
            raise typer.Exit(1)
        _, risk = p.resume(task, actor="cli")
    console.print(f"resumed: {risk}", highlight=False, soft_wrap=True)
