"""``Project``: a config and its store, and the verbs the CLI wraps.

Everything the CLI can do is a method here, so users can script the same loop in Python::

    >>> from downsize import Project                                    # doctest: +SKIP
    >>> p = Project.open("downsize.yaml")
    >>> p.label("tickets", "tickets.csv")
    >>> p.train("tickets"); p.calibrate("tickets", alpha=0.02)
    >>> p.predict("tickets", "new.csv", "out.csv")
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import func, select

from .audit import decision_records
from .audit import teacher_only_cost as _teacher_only_cost
from .calibration import ThresholdCalibrator
from .cascade import AnsweredBy, Cascade, Decision, Policy
from .config import Config, load_config
from .data import decode_answers, label_file, read_texts, write_rows
from .errors import DataError, NotCalibratedError, StudentError
from .store import CalibrationRun, Store, StudentVersion, TeacherCall
from .teacher import AsyncTeacher, SharedBudget, build_messages
from .lifecycle import live as live_version
from .training import TrainResult, calibrate_task, load_student_version, train_task

__all__ = ["Project", "PredictSummary", "percentile"]


def percentile(values: Sequence[float], q: float) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.percentile(vals, q)) if vals else None


@dataclass
class PredictSummary:
    """What ``downsize predict`` prints after the rows are written."""

    task: str
    rows: int
    answered_by: dict[str, int]
    share_local: float
    teacher_calls_saved: int
    cost_usd: float
    teacher_only_cost_usd: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    teacher_only_latency_p50_ms: float | None
    teacher_only_latency_p95_ms: float | None
    escalated_agreement: float | None
    threshold: float | None
    student_version: int
    output: str | None = None
    skipped: list[tuple[int, str]] = field(default_factory=list)
    #: The input's columns copied into the output, and prediction columns renamed to stay clear of them.
    columns_kept: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)


class Project:
    """A downsize project: its :class:`Config` and :class:`Store`.

    Parameters
    ----------
    config : Config
    store : Store, optional
        Defaults to the store the config names.
    """

    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        self.store = store if store is not None else Store(config.store_url())

    @classmethod
    def open(cls, path: str | os.PathLike[str] = "downsize.yaml") -> Project:
        return cls(load_config(path))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def teacher(self, task: str) -> AsyncTeacher:
        """A teacher client for the task, recording into (and reading the cache of) this store."""
        return AsyncTeacher.from_config(self.config.teacher_for(task), store=self.store)

    # -- label / train / calibrate ------------------------------------------------------
    def label(self, task: str, path: str | os.PathLike[str], *, text_col: str | None = None,
              limit: int | None = None, budget_usd: float | None = None, progress: bool = True,
              keep_going: bool = False) -> Any:
        """Have the teacher label the rows of a file (resumable; nothing is paid for twice)."""
        return label_file(self.config, task, path, text_col=text_col, limit=limit,
                          budget_usd=budget_usd, store=self.store, progress=progress, keep_going=keep_going)

    def synth(self, task: str, per_label: int, *, budget_usd: float | None = None, progress: bool = True,
              max_rounds: int = 3, near_duplicate: float = 0.8) -> Any:
        """Have the teacher write verified examples per label (``downsize synth``; cached, budgeted, resumable)."""
        from .data.synth import synth_task

        return synth_task(self.config, task, per_label, budget_usd=budget_usd, store=self.store, progress=progress,
                          max_rounds=max_rounds, near_duplicate=near_duplicate)

    def add_gold(self, task: str, path: str | os.PathLike[str], *, text_col: str | None = None,
                 label_col: str = "label", source: str = "gold") -> int:
        """Import human or gold labels from a file (they override teacher labels)."""
        t = self.config.task(task)
        data = read_texts(path, text_col or t.text_field, label_col=label_col)
        answers = decode_answers(t, data.labels or [], data.rows, str(path))
        ids = self.store.add_examples(task, data.texts, source=str(path))
        return self.store.add_labels(task, zip(ids, (t.encode(a) for a in answers)), source=source)

    def train(self, task: str, *, kind: str | None = None, seed: int = 0,
              progress: Callable[[str], None] | None = None) -> TrainResult:
        return train_task(self.store, self.config, task, kind=kind, seed=seed, progress=progress)

    def calibrate(self, task: str, *, alpha: float | None = None, delta: float | None = None,
                  save: bool = True, force: bool = False) -> tuple[CalibrationRun, ThresholdCalibrator]:
        """See :func:`~downsize.training.calibrate_task` (``save=False``: a dry run); the what-if table
        prices requests at the task's average recorded teacher tokens."""
        tokens = self.teacher_token_estimate(task)
        cost = self.config.teacher_for(task).cost(int(round(tokens[0])), int(round(tokens[1])))
        return calibrate_task(self.store, self.config, task, alpha=alpha, delta=delta, save=save, force=force,
                              cost_per_request=cost)

    # -- the task's life after calibration (downsize.lifecycle) ------------------------------
    def retrain(self, task: str, *, recalibrate: bool | None = None, promote: bool = True,
                actor: str = "python") -> Any:
        """A candidate from recent labels, gated on fresher ones (``recalibrate=True``: the live
        student on the recent window; None: retrain if there are enough fresh labels, else that)."""
        from . import lifecycle

        if recalibrate is None:
            return lifecycle.retrain_or_recalibrate(self.store, self.config, task, promote_it=promote, actor=actor)
        fn = lifecycle.recalibrate_task if recalibrate else lifecycle.retrain_task
        return fn(self.store, self.config, task, promote_it=promote, actor=actor)

    def versions(self, task: str) -> list[dict[str, Any]]:
        from . import lifecycle

        self.config.task(task)
        return lifecycle.versions(self.store, task)

    def promote(self, task: str, version: int, *, actor: str = "python") -> Any:
        from . import lifecycle

        return lifecycle.promote(self.store, self.config, task, version, actor=actor)

    def rollback(self, task: str, *, actor: str = "python") -> Any:
        from . import lifecycle

        return lifecycle.rollback(self.store, self.config, task, actor=actor)

    def resume(self, task: str, *, actor: str = "python") -> tuple[Any, str]:
        from . import lifecycle

        return lifecycle.resume(self.store, self.config, task, actor=actor)

    # -- the cascade ----------------------------------------------------------------------
    def cascade(self, task: str, *, teacher: AsyncTeacher | None = None, require_calibration: bool = True) -> Cascade:
        """The task's live student with its calibration, and the policy they allow.

        Live is the newest student with its newest calibration until the task's first promotion,
        rollback or suspension; from then on what :func:`downsize.lifecycle.live` says (a
        suspended task gets a shadow policy whose reason starts with ``suspended:``).

        With ``require_calibration=False`` (the gateway) it never refuses: a task without a
        calibrated student, with a student that cannot be loaded, or with ``mode: shadow`` gets a
        shadow policy that says why (and the would-be student, when there is one).

        Raises
        ------
        NotCalibratedError
            With ``require_calibration``: no student, or the latest student was never calibrated.
        StudentError
            With ``require_calibration``: the student's files are missing or corrupt.
        """
        t = self.config.task(task)
        now = live_version(self.store, task)
        sv, run = now.student, now.calibration
        missing = (f"task {task!r} has no student: run `downsize train {task}` then `downsize calibrate {task}`"
                   if sv is None else
                   f"student v{sv.version} of task {task!r} is not calibrated: run `downsize calibrate {task}`"
                   if run is None else None)
        if require_calibration and missing:
            raise NotCalibratedError(missing)
        student, load_error = None, None
        if sv is not None:
            try:
                student = load_student_version(sv, self.config.home_dir())
            except StudentError as exc:
                if require_calibration:
                    raise
                load_error = str(exc)
        waiting = (f"; calibrated {sv.kind} student v{sv.version} waiting" if sv is not None and run is not None
                   else f"; {missing}" if missing else "")
        shadow = (f"the student could not be loaded ({load_error})" if load_error else
                  f"mode: shadow in the config{waiting}" if t.mode == "shadow" else
                  f"no calibrated student ({missing})" if missing else
                  f"suspended: {now.reason}" if now.suspended else None)
        return Cascade(t, task_name=task, student=student, teacher=teacher,
                       policy=Policy(threshold=run.threshold if run is not None else None, shadow=shadow),
                       student_version_id=sv.id if sv is not None else None,
                       calibration_run_id=run.id if run is not None else None,
                       student_kind=sv.kind if student is not None else None, load_error=load_error)

    def teacher_token_estimate(self, task: str) -> tuple[float, float]:
        """Average recorded (input, output) tokens of this task's teacher calls, or a prompt-length estimate."""
        with self.store.session() as s:
            row = s.execute(
                select(func.avg(TeacherCall.input_tokens), func.avg(TeacherCall.output_tokens), func.count())
                .where(TeacherCall.task == task, TeacherCall.status == "ok")
            ).one()
        if row[2]:
            return float(row[0]), float(row[1])
        t = self.config.task(task)
        chars = sum(len(m["content"]) for m in build_messages(t, "x" * 400))
        return chars / 4, 6.0

    def teacher_latencies(self, task: str, limit: int = 5000) -> list[float]:
        """Recorded latencies (ms) of this task's real teacher calls: the teacher-only baseline."""
        with self.store.session() as s:
            return [float(x) for (x,) in s.execute(
                select(TeacherCall.latency_ms).where(TeacherCall.task == task)
                .order_by(TeacherCall.id.desc()).limit(limit))]

    def run_cascade(self, task: str, texts: Sequence[str], *, channel: str = "batch",
                    budget_usd: float | None = None, progress: bool = True, chunk: int = 256
                    ) -> tuple[list[Decision], Cascade]:
        """Answer ``texts`` through the cascade and write one audit-log row per text."""
        decisions, cas, _ = self._run_cascade(task, texts, channel=channel, budget_usd=budget_usd,
                                              progress=progress, chunk=chunk)
        return decisions, cas

    def _run_cascade(self, task: str, texts: Sequence[str], *, channel: str, budget_usd: float | None,
                     progress: bool, chunk: int = 256) -> tuple[list[Decision], Cascade, tuple[float, float]]:
        """:meth:`run_cascade`, also returning the teacher token estimate its audit rows used."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        tcfg = self.config.teacher_for(task)
        tokens = self.teacher_token_estimate(task)
        t = self.config.task(task)
        decisions: list[Decision] = []

        async def go() -> Cascade:
            budget = SharedBudget(budget_usd, self.store) if budget_usd is not None else None
            async with self.teacher(task) as teacher:
                cas = self.cascade(task, teacher=teacher)
                with Progress(TextColumn("[bold]cascade"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                              TextColumn("{task.fields[local]}"), TimeRemainingColumn(), disable=not progress) as bar:
                    job = bar.add_task("cascade", total=len(texts), local="")
                    for start in range(0, len(texts), chunk):
                        part = list(texts[start : start + chunk])
                        got = await cas.apredict(part, budget=budget)
                        decisions.extend(got)
                        records = decision_records(task, t, part, got, tcfg=tcfg, tokens=tokens, channel=channel,
                                                   threshold=cas.threshold, student_version_id=cas.student_version_id)
                        self.store.log_requests([r.row() for r in records])
                        local = sum(d.answered_by is AnsweredBy.STUDENT for d in decisions) / len(decisions)
                        bar.update(job, advance=len(part), local=f"{local:.0%} local")
            return cas

        cas = asyncio.run(go())
        return decisions, cas, tokens

    def predict(self, task: str, path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None,
                *, text_col: str | None = None, limit: int | None = None, budget_usd: float | None = None,
                progress: bool = True, keep_cols: Sequence[str] | None = None) -> PredictSummary:
        """Run the cascade over a file; write the input's columns (``keep_cols``; None: all of them),
        then per row: row, text, the answer (the kind's :attr:`~downsize.tasks.TaskConfig.answer_key`),
        confidence, answered_by, latency_ms, cost_usd and reason. A prediction column whose name an
        input column kept already has is written as ``downsize_<name>`` (an input ``label`` is never
        overwritten); ``text`` is left out when the input's text column is kept.

        Raises
        ------
        DataError
            ``keep_cols`` names a column the file does not have.
        """
        t = self.config.task(task)
        col = text_col or t.text_field
        data = read_texts(path, col, limit=limit, keep_records=True)
        keep = list(data.columns) if keep_cols is None else list(dict.fromkeys(keep_cols))
        missing = [c for c in keep if c not in data.columns]
        if missing:
            raise DataError(f"{path}: --keep-cols names column(s) {missing} that the file does not have; it has: "
                            f"{', '.join(data.columns)}")
        decisions, cas, tokens = self._run_cascade(task, data.texts, channel="batch", budget_usd=budget_usd,
                                                   progress=progress)
        names = [n for n in ("row", "text", t.answer_key, "confidence", "answered_by", "latency_ms", "cost_usd",
                             "reason") if not (n == "text" and col in keep)]
        renamed = {n: f"downsize_{n}" for n in names if n in keep}
        if output is not None:
            write_rows(output, [
                {**{c: rec.get(c) for c in keep}, **{renamed.get(n, n): v for n, v in {
                    "row": r, "text": x, t.answer_key: t.answer_value(d.answer),
                    "confidence": None if d.confidence is None else round(d.confidence, 6),
                    "answered_by": d.answered_by.value, "latency_ms": round(d.latency_ms, 3),
                    "cost_usd": d.teacher_cost_usd, "reason": d.reason}.items() if n in names}}
                for r, x, d, rec in zip(data.rows, data.texts, decisions, data.records or [])
            ])
        summary = self._summary(task, decisions, cas, tokens, output, data.skipped)
        summary.columns_kept, summary.renamed = keep, renamed
        return summary

    def _summary(self, task: str, decisions: list[Decision], cas: Cascade, tokens: tuple[float, float],
                 output: Any, skipped: list[tuple[int, str]]) -> PredictSummary:
        """The end-of-run figures; teacher-only cost uses the same token estimate as the audit rows."""
        tcfg = self.config.teacher_for(task)
        n = len(decisions)
        by: dict[str, int] = {}
        for d in decisions:
            by[d.answered_by.value] = by.get(d.answered_by.value, 0) + 1
        esc = [d for d in decisions if d.teacher_answer is not None and d.student_answer is not None]
        t = self.config.task(task)
        lat_t = self.teacher_latencies(task)
        sv = self.store.student(cas.student_version_id) if cas.student_version_id else None
        return PredictSummary(
            task=task, rows=n, answered_by=by, share_local=by.get("student", 0) / n if n else 0.0,
            teacher_calls_saved=by.get("student", 0),
            cost_usd=sum(d.teacher_cost_usd for d in decisions),
            teacher_only_cost_usd=sum(_teacher_only_cost(tcfg, d, tokens) for d in decisions),
            latency_p50_ms=percentile([d.latency_ms for d in decisions], 50),
            latency_p95_ms=percentile([d.latency_ms for d in decisions], 95),
            teacher_only_latency_p50_ms=percentile(lat_t, 50), teacher_only_latency_p95_ms=percentile(lat_t, 95),
            escalated_agreement=(sum(t.disagreement(d.student_answer, d.teacher_answer) == 0 for d in esc) / len(esc))
            if esc else None,
            threshold=cas.threshold, student_version=sv.version if sv else 0,
            output=str(output) if output is not None else None, skipped=skipped,
        )

    # -- reading back ----------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """Per task: labelled examples, live student and calibration, state (live / suspended, and why)."""
        out = []
        for name in self.config.tasks:
            now = live_version(self.store, name)
            sv: StudentVersion | None = now.student
            run = now.calibration
            out.append({
                "state": "suspended" if now.suspended else ("live" if run is not None else "shadow"),
                "reason": now.reason,
                "task": name, "labelled": len(self.store.labelled_examples(name)),
                "student": f"v{sv.version} ({sv.kind})" if sv else None,
                "threshold": None if run is None else run.threshold,
                "coverage": None if run is None else run.coverage,
                "spend_usd": self.store.teacher_spend(task=name),
            })
        return out
