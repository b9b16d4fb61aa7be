"""The loop's commands: init, label, add-labels, train, calibrate, predict, eval, status."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ._common import ConfigOpt, _errors, _fmt, _project, app, console, err_console



@app.command()
@_errors
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the config.")] = Path("downsize.yaml"),
    kind: Annotated[str, typer.Option(help="The task's kind: classify | multilabel | extract.")] = "classify",
) -> None:
    """Write a commented downsize.yaml template (one task of the given kind)."""
    from ..config import write_template

    write_template(path, kind=kind)
    console.print(f"wrote {path}: edit the teacher and the task, then run [bold]downsize label[/]")


@app.command()
@_errors
def label(
    task: Annotated[str, typer.Argument(help="Task name from downsize.yaml.")],
    data: Annotated[Path, typer.Argument(help="CSV, JSONL or Parquet file of unlabelled rows.")],
    text_col: Annotated[str | None, typer.Option(help="Column with the text (default: the task's text_field).")] = None,
    limit: Annotated[int | None, typer.Option(help="Label at most this many rows.")] = None,
    budget: Annotated[float | None, typer.Option(
        help="Stop before spending more than this many dollars (counting what other runs on the store spend meanwhile).")] = None,
    keep_going: Annotated[bool, typer.Option(
        "--keep-going", help="Label on when the teacher fails call after call or its first answers do not parse.")] = False,
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Have the teacher label a file. Resumable: only rows without a label are sent, and a call is
    never paid twice (not by a re-run, nor by two runs at once on one store).

    \b
    Exit codes:
      0    every row has a label
      5    some rows failed (parse or teacher errors); run again to retry them
      3    the teacher is unreachable: stopped early after failed calls in a row
      6    none of the first answers fit the task (check the labels): stopped early
      4    stopped before a call could pass --budget
      130  interrupted (Ctrl-C); 143 terminated (SIGTERM): stopped after the calls in flight
      2    bad input or config; 1 any other error
    """
    try:
        with _project(config) as p:
            summary = p.label(task, data, text_col=text_col, limit=limit, budget_usd=budget, keep_going=keep_going)
    except KeyboardInterrupt:  # a second Ctrl-C or SIGTERM: the calls in flight were abandoned
        err_console.print("aborted: the labels received so far are kept; run the same command again "
                          "(only the calls that were in flight may be paid again)")
        raise typer.Exit(130) from None
    console.print(summary.render())
    code = summary.exit_code
    if summary.stop_message:
        err_console.print(summary.stop_message, highlight=False, soft_wrap=True)
    if summary.stopped_reason in ("interrupted", "terminated"):
        err_console.print(f"{summary.stopped_reason}: run the same command again to label the rest "
                          "(nothing is paid twice)")
    elif code == 5:
        err_console.print(f"{summary.failed:,} row(s) failed: run the same command again to retry them "
                          "(the others are not paid again)")
    if code:
        raise typer.Exit(code)


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
    student: Annotated[str | None, typer.Option(help="auto | tfidf | minilm | ensemble (default: the task's).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the train/calibration split.")] = 0,
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Train a new student version on the task's labels (cross-fitted: every label also calibrates)."""
    with _project(config) as p:
        r = p.train(task, kind=student, seed=seed, progress=lambda line: console.print(line, highlight=False))
    if r.selection:
        c = Table(title="candidates judged on out-of-fold answers by the calibration's rule "
                  f"(alpha={p.config.task(task).alpha:g})")
        for col in ("candidate", "certified", "over folds", "agreement", "fit time"):
            c.add_column(col, no_wrap=col == "candidate")
        for row in r.selection:
            folds = row.get("coverage_folds") or []
            mark = " ✓" if row.get("chosen") else ""
            c.add_row(row["kind"] + mark, f"{row['coverage']:.1%}",
                      f"{min(folds):.1%}–{max(folds):.1%}" if folds else "—",
                      f"{row['agreement']:.1%}", f"{row['fit_seconds']:.1f} s")
        console.print(c)
    t = Table(title=f"{task}: student v{r.version} ({r.kind})", show_header=False)
    calib = (f"calibrates on the out-of-fold answers of all {r.n_calib:,} rows" if r.calibration != "held out"
             else f"{r.n_calib:,} held out for calibration")
    t.add_row("trained on", f"{r.n_train:,} rows ({len(r.label_counts)} labels); {calib}")
    t.add_row("train time", f"{r.train_seconds:.2f} s")
    t.add_row("size on disk", f"{r.size_bytes / 1e6:.2f} MB")
    if r.teacher_only:
        why = "; ".join(f"{lab} ({reason})" for lab, reason in sorted(r.teacher_only.items()))
        t.add_row("teacher-only labels", f"{len(r.teacher_only)}: {why}; the student never gives them, the "
                  f"teacher answers them ({r.teacher_only_rows:,} labelled rows; lower min_examples_per_label "
                  "or label more to train on them)")
    t.add_row("out-of-fold agreement with labels" if r.calibration != "held out" else "held-out agreement with labels",
              "–" if r.n_calib == 0 else f"{r.holdout_agreement:.1%}")
    t.add_row("choice", r.selection_reason)
    t.add_row("saved to", r.path)
    console.print(t)
    for note in r.notes:
        err_console.print(f"note: {note}", highlight=False)
    console.print(f"next: [bold]downsize calibrate {task}[/]")


def _print_what_if(run: Any) -> None:
    """The table a user decides with: other α, what they certify and save; labels; what holds it back."""
    w = (run.details or {}).get("what_if")
    if not w:
        return
    t = Table(title="what other alpha would give (same rows, same rule)")
    for col in ("alpha", "certified coverage", "$ saved per 1k requests"):
        t.add_column(col, justify="right")
    for r in w["by_alpha"]:
        usd = "—" if r.get("saved_usd_per_1k") is None else f"${r['saved_usd_per_1k']:.2f}"
        t.add_row(f"{r['alpha']:.0%}" + (" ←" if abs(r["alpha"] - run.alpha) < 1e-12 else ""), f"{r['coverage']:.1%}", usd)
    console.print(t)
    need = w.get("labels_needed")
    if need is None:
        console.print(f"estimate: no share of ≥ 5 % of the rows has an observed error rate below {run.alpha:.0%}; more "
                      "labels alone will not certify it (a stronger student, or a larger alpha, may)")
    elif need["more"] > 0 and need["coverage"] > run.coverage:
        console.print(f"estimate: about {need['more']:,} more teacher labels ({need['total']:,} in all) would certify "
                      f"alpha = {run.alpha:.0%} at about {need['coverage']:.0%} coverage, if the error rate of the most "
                      f"confident {need['coverage']:.0%} stays at the {need['observed_risk']:.1%} observed now")
    elif need["coverage"] > run.coverage:
        console.print(f"estimate: at the {need['observed_risk']:.1%} error rate observed among the most confident "
                      f"{need['coverage']:.0%}, these {w['n']:,} rows would certify about {need['coverage']:.0%}; the rule "
                      "stopped earlier at confident errors near the top (see the labels below)")
    held = w.get("held_back_by") or []
    if held:
        console.print(f"labels that hold the student back (loss among the most confident {w['region']:.0%}): "
                      + ", ".join(f"{h['label']} ({h['error_rate']:.0%} wrong of {h['rows']}, "
                                  f"{h['share_of_loss']:.0%} of the loss)" for h in held))


@app.command()
@_errors
def calibrate(
    task: Annotated[str, typer.Argument()],
    alpha: Annotated[float | None, typer.Option(help="Max disagreement rate on answered requests.")] = None,
    delta: Annotated[float | None, typer.Option(help="The guarantee holds with probability 1-delta.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be certified; save nothing.")] = False,
    force: Annotated[bool, typer.Option(help="Save even a calibration that qualifies no threshold over one "
                                        "that has a threshold (every request then goes to the teacher).")] = False,
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Pick the confidence threshold with a finite-sample guarantee (Learn-then-Test)."""
    with _project(config) as p:
        run, cal = p.calibrate(task, alpha=alpha, delta=delta, save=not dry_run, force=force)
    dry = " — dry run, nothing saved" if dry_run else ""
    t = Table(title=f"{task}: calibration (student v{run.details.get('student_version')}){dry}", show_header=False)
    t.add_row("target", f"disagreement ≤ {run.alpha:.1%} with probability ≥ {1 - run.delta:.0%}")
    rows = "out-of-fold rows" if "crossfit" in run.method else "held-out rows"
    t.add_row("relative to", f"{run.reference} labels on {run.n_calib:,} {rows}")
    if run.threshold is None:
        t.add_row("threshold", "[red]none qualifies[/]: every request " + ("would stay" if dry_run else "stays")
                  + " on the teacher")
    else:
        t.add_row("threshold λ", f"{run.threshold:.4f}")
        t.add_row("answered locally", f"{run.coverage:.1%} (interval {run.coverage_lo:.1%}–{run.coverage_hi:.1%})")
        t.add_row("errors among answered", f"{run.errors_answered} of {run.n_answered}")
    console.print(t)
    _print_what_if(run)
    console.print(run.details.get("guarantee", ""), highlight=False)
    note = (run.details.get("reference_rows") or {}).get("note")
    if note and (run.details.get("reference_rows") or {}).get("requested") == "human":
        console.print(note, highlight=False)


@app.command()
@_errors
def predict(
    task: Annotated[str, typer.Argument()],
    data: Annotated[Path, typer.Argument(help="File of rows to answer.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output CSV/JSONL.")],
    text_col: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int | None, typer.Option()] = None,
    budget: Annotated[float | None, typer.Option(help="Dollar cap on teacher calls for escalations.")] = None,
    keep_cols: Annotated[str, typer.Option(
        help="Input columns to copy into the output: 'all' (default), 'none', or a comma-separated list. "
        "The prediction goes into new columns after them (row, text, the answer e.g. label, confidence, "
        "answered_by, latency_ms, cost_usd, reason); one whose name an input column kept already has "
        "is written as downsize_<name> (an input label column is never overwritten), and text is left "
        "out when the input's text column is kept.")] = "all",
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Answer a file through the cascade: student when it may, teacher otherwise."""
    cols = None if keep_cols.strip().lower() == "all" else [] if keep_cols.strip().lower() == "none" else \
        [c.strip() for c in keep_cols.split(",") if c.strip()]
    with _project(config) as p:
        s = p.predict(task, data, output, text_col=text_col, limit=limit, budget_usd=budget, keep_cols=cols)
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
    if s.renamed:
        console.print("prediction columns renamed beside the input's: "
                      + ", ".join(f"{a} → {b}" for a, b in s.renamed.items()), highlight=False)
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
    from ..evaluation import evaluate_file

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
    for c in ("task", "state", "labelled", "student", "threshold", "coverage", "teacher $"):
        t.add_column(c)
    for r in rows:
        state = "[bold red]SUSPENDED[/]" if r["state"] == "suspended" else r["state"]
        t.add_row(r["task"], state, f"{r['labelled']:,}", r["student"] or "–", _fmt(r["threshold"], ".4f"),
                  _fmt(None if r["coverage"] is None else 100 * r["coverage"], ".1f", "%"), f"{r['spend_usd']:.4f}")
    console.print(t)
    for r in rows:
        if r["state"] == "suspended":
            console.print(f"[bold red]{r['task']} is suspended[/] (every request goes to the teacher): {r['reason']}",
                          highlight=False, soft_wrap=True)
