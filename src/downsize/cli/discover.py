"""Finding the work: ``downsize audit LOGS...``, ``downsize audit import``, ``downsize synth``.

``audit`` is a group whose default command reads logs (``downsize audit LOGS...`` is
``downsize audit run LOGS...``); ``audit import`` stores a template's logged pairs as labels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from ._common import ConfigOpt, _errors, _project, app, console, err_console


class _RunByDefault(TyperGroup):
    """``downsize audit LOGS...`` runs ``audit run LOGS...``; ``audit import`` is a command of its own."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


audit_app = typer.Typer(cls=_RunByDefault, no_args_is_help=True,
                        help="Find the LLM calls a small model can take over, in logs you already have.")
app.add_typer(audit_app, name="audit")

LogsArg = Annotated[list[str], typer.Argument(
    help="Log files: OpenAI Batch input/output JSONL, {request, response} JSONL, a LiteLLM spend-log export "
         "(JSON/CSV), or a downsize store (.db / sqlite:///...) with pass-through rows.")]
FormatOpt = Annotated[str, typer.Option("--format", help="auto | openai_batch | chat_pairs | litellm | downsize")]


def _existing(logs: list[str]) -> list[str]:
    """The log paths that exist (a missing one is reported, not fatal while another can be read)."""
    ok = [x for x in logs if x.startswith("sqlite:") or Path(x).exists()]
    for x in sorted(set(logs) - set(ok)):
        err_console.print(f"[yellow]warning:[/] {x}: no such file (skipped)", highlight=False)
    if not ok:
        from ..errors import DataError

        raise DataError("none of the log files exist: " + ", ".join(logs))
    return ok


def _discover(logs: list[str], fmt: str, *, certify: bool, names: bool, rpm: float | None) -> Any:
    """Run :func:`downsize.discover.discover` with a progress bar per stage (on stderr)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..discover import default_certifier, discover

    with Progress(TextColumn("[bold]{task.description:10s}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        jobs: dict[str, Any] = {}

        def tick(stage: str, done: int, total: int) -> None:
            if stage not in jobs:
                jobs[stage] = bar.add_task(stage, total=max(total, 1))
            bar.update(jobs[stage], completed=done, total=max(total, 1))

        return discover(_existing(logs), format=fmt, certifier=default_certifier if certify else None, names=names,
                        requests_per_month=rpm, progress=tick)


def _report_reading(d: Any) -> None:
    for f in d.read.report.files:
        line = f"{f.path} ({f.format}): {f.records:,} records from {f.lines:,} {f.unit}s"
        if f.bad_count:
            listed = "; ".join(f"{f.unit} {b.line}: {b.reason}" for b in f.bad[:10])
            more = f" and {f.bad_count - min(10, len(f.bad)):,} more" if f.bad_count > min(10, len(f.bad)) else ""
            err_console.print(f"[yellow]{line}; {f.bad_count:,} bad[/] ({listed}{more})", highlight=False)
        else:
            err_console.print(line, highlight=False)
        for n in f.notes:
            err_console.print(f"  note: {n}", highlight=False)
    for n in d.notes:
        err_console.print(f"note: {n}", highlight=False)


@audit_app.command("run", hidden=True)
@_errors
def audit_run(
    logs: LogsArg,
    fmt: FormatOpt = "auto",
    yaml: Annotated[Path | None, typer.Option("--yaml", help="Write a downsize.yaml for the top narrow templates.")] = None,
    yaml_top: Annotated[int, typer.Option(help="How many narrow templates the yaml gets (best savings first).")] = 5,
    html: Annotated[Path | None, typer.Option("--html", help="Write the table as a self-contained HTML page.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write everything found as JSON.")] = None,
    top: Annotated[int, typer.Option(help="Rows of the table.")] = 20,
    requests_per_month: Annotated[float | None, typer.Option(
        help="Project costs at this many requests a month (default: the rate observed in the logs).")] = None,
    certify: Annotated[bool, typer.Option(help="Distil and calibrate on the logged pairs (the certified share).")] = True,
    names: Annotated[bool, typer.Option(help="Look for people's names (spaCy, when installed).")] = True,
    force: Annotated[bool, typer.Option(help="Overwrite an existing --yaml file.")] = False,
) -> None:
    """Rank the call sites of logged LLM traffic: narrow or broad, private, $/month, certified local share."""
    if yaml is not None and yaml.exists() and not force:
        raise typer.BadParameter(f"{yaml} exists; pass --force to overwrite it", param_hint="--yaml")
    d = _discover(logs, fmt, certify=certify, names=names, rpm=requests_per_month)
    _report_reading(d)
    console.print(d.table(top=top))
    narrow = [v for v in d.verdicts if v.scope == "narrow" and v.kind]
    console.print(f"{len(narrow)} of {len(d.verdicts)} templates are narrow; open-ended ones stay on the large model.",
                  highlight=False)
    summary = {**d.to_dict(), "rows": d.rows()}
    if yaml is not None:
        yaml.write_text(d.config_yaml(top=yaml_top))
        console.print(f"wrote {yaml} ({min(yaml_top, len(d.proposals(top=None)))} tasks): edit base_url and keys, then "
                      f"[bold]downsize audit import {' '.join(logs)} --task NAME -c {yaml}[/]", highlight=False)
    if html is not None:
        from ..report.render.audit import audit_page

        html.write_text(audit_page(summary), encoding="utf-8")
        console.print(f"wrote {html}")
    if json_out is not None:
        json_out.write_text(json.dumps(summary, default=str, indent=1))
        console.print(f"wrote {json_out}")


@audit_app.command("import")
@_errors
def audit_import(
    logs: LogsArg,
    task: Annotated[str, typer.Option("--task", "-t", help="The task (in downsize.yaml) the pairs are labels of.")],
    template: Annotated[int | None, typer.Option(
        help="The template id (the # column of `downsize audit`; default: the one the yaml named the task after).")] = None,
    fmt: FormatOpt = "auto",
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Store a template's logged pairs as the task's labels (source audit: no teacher call; re-runs add nothing)."""
    from ..discover.importing import find_template, import_pairs, summary_lines

    d = _discover(logs, fmt, certify=False, names=False, rpm=None)
    _report_reading(d)
    with _project(config) as p:
        tid = find_template(d, p.config, task, template)
        s = import_pairs(p.store, p.config, task, d, tid, source="audit: " + ", ".join(logs)[:200])
    for line in summary_lines(s):
        console.print(line, highlight=False)
    for e in s.refused_examples:
        err_console.print(f"  refused: {e}", highlight=False)
    console.print(f"next: [bold]downsize train {task}[/]")


@app.command()
@_errors
def synth(
    task: Annotated[str, typer.Argument(help="Task name from downsize.yaml.")],
    per_label: Annotated[int, typer.Option(help="Examples to keep per label (per field for extract).")] = 16,
    budget: Annotated[float | None, typer.Option(help="Stop before spending more than this many dollars.")] = None,
    max_rounds: Annotated[int, typer.Option(help="Rounds of writing per label (each asks for --per-label more).")] = 3,
    near_duplicate: Annotated[float, typer.Option(help="Character 5-gram Jaccard at which a text is a near duplicate.")] = 0.8,
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Cold start: the teacher writes varied examples per label, each kept only if it then gives that label.

    Stored as source synthetic: mixed into training (the task's synthetic_weight), never used to calibrate.
    Cached, budgeted and resumable: run it again to finish (nothing is paid twice).
    """
    if per_label < 1:
        raise typer.BadParameter("--per-label must be at least 1")
    with _project(config) as p:
        s = p.synth(task, per_label, budget_usd=budget, max_rounds=max_rounds, near_duplicate=near_duplicate)
        real = [e for e in p.store.labelled_examples(task) if e.source != "synthetic"]
    console.print(s.render())
    for e in s.errors[:5]:
        err_console.print(f"  {e}", highlight=False)
    if not real:
        err_console.print(f"note: {task} has only synthetic examples: `downsize train {task}` works, but calibration "
                          f"needs real traffic (`downsize label {task} DATA` or `downsize audit import LOGS --task "
                          f"{task}`) before the student may answer anything", highlight=False)
    if s.stopped_reason in ("interrupted", "terminated"):
        err_console.print(f"{s.stopped_reason}: run the same command again to finish (nothing is paid twice)")
    if s.stopped_reason is not None:
        from ..data.summary import EXIT_CODES

        raise typer.Exit(EXIT_CODES.get(s.stopped_reason, 1))
