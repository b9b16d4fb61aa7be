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
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from .audit import audit_rows as _audit_rows
from .audit import teacher_only_cost as _teacher_only_cost
from .calibration import ThresholdCalibrator
from .cascade import Cascade, Decision
from .config import Config, TeacherConfig, load_config
from .data import read_texts, write_rows
from .errors import DataError, NotCalibratedError
from .store import CalibrationRun, Store, StudentVersion, TeacherCall
from .teacher import AsyncTeacher, Budget, build_messages
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
              limit: int | None = None, budget_usd: float | None = None, progress: bool = True) -> Any:
        """Have the teacher label the rows of a file (resumable; nothing is paid for twice)."""
        from .labeling import label_file

        return label_file(self.config, task, path, text_col=text_col, limit=limit,
                          budget_usd=budget_usd, store=self.store, progress=progress)

    def add_gold(self, task: str, path: str | os.PathLike[str], *, text_col: str | None = None,
                 label_col: str = "label", source: str = "gold") -> int:
        """Import human or gold labels from a file (they override teacher labels)."""
        t = self.config.task(task)
        data = read_texts(path, text_col or t.text_field, label_col=label_col)
        _check_gold_labels(data.labels or [], data.rows, list(t.labels), str(path))
        ids = self.store.add_examples(task, data.texts, source=str(path))
        return self.store.add_labels(task, zip(ids, data.labels or []), source=source)

    def train(self, task: str, *, kind: str | None = None, seed: int = 0) -> TrainResult:
        return train_task(self.store, self.config, task, kind=kind, seed=seed)

    def calibrate(self, task: str, *, alpha: float | None = None, delta: float | None = None
                  ) -> tuple[CalibrationRun, ThresholdCalibrator]:
        return calibrate_task(self.store, self.config, task, alpha=alpha, delta=delta)

    # -- the cascade ----------------------------------------------------------------------
    def cascade(self, task: str, *, teacher: AsyncTeacher | None = None) -> Cascade:
        """The latest student with its latest calibration.

        Raises
        ------
        NotCalibratedError
            No student, or the latest student was never calibrated.
        """
        t = self.config.task(task)
        sv = self.store.latest_student(task)
        if sv is None:
            raise NotCalibratedError(f"task {task!r} has no student: run `downsize train {task}` then `downsize calibrate {task}`")
        run = self.store.latest_calibration(task, student_version_id=sv.id)
        if run is None:
            raise NotCalibratedError(f"student v{sv.version} of task {task!r} is not calibrated: run `downsize calibrate {task}`")
        return Cascade(load_student_version(sv), threshold=run.threshold, teacher=teacher, task_name=task,
                       task=t, student_version_id=sv.id, calibration_run_id=run.id)

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
        log_text = self.config.task(task).log_text
        decisions: list[Decision] = []

        async def go() -> Cascade:
            budget = Budget(budget_usd) if budget_usd is not None else None
            async with self.teacher(task) as teacher:
                cas = self.cascade(task, teacher=teacher)
                with Progress(TextColumn("[bold]cascade"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                              TextColumn("{task.fields[local]}"), TimeRemainingColumn(), disable=not progress) as bar:
                    job = bar.add_task("cascade", total=len(texts), local="")
                    for start in range(0, len(texts), chunk):
                        part = list(texts[start : start + chunk])
                        got = await cas.apredict(part, budget=budget)
                        decisions.extend(got)
                        self.store.log_requests(_audit_rows(task, part, got, cas, tcfg, tokens, channel, log_text))
                        local = sum(d.answered_by == "student" for d in decisions) / len(decisions)
                        bar.update(job, advance=len(part), local=f"{local:.0%} local")
            return cas

        cas = asyncio.run(go())
        return decisions, cas, tokens

    def predict(self, task: str, path: str | os.PathLike[str], output: str | os.PathLike[str] | None = None,
                *, text_col: str | None = None, limit: int | None = None, budget_usd: float | None = None,
                progress: bool = True) -> PredictSummary:
        """Run the cascade over a file; write label, confidence, answered_by, latency and cost per row."""
        t = self.config.task(task)
        data = read_texts(path, text_col or t.text_field, limit=limit)
        decisions, cas, tokens = self._run_cascade(task, data.texts, channel="batch", budget_usd=budget_usd,
                                                   progress=progress)
        if output is not None:
            write_rows(output, [
                {"row": r, "text": x, "label": d.label, "confidence": round(d.confidence, 6),
                 "answered_by": d.answered_by, "latency_ms": round(d.latency_ms, 3),
                 "cost_usd": d.teacher_cost_usd, "reason": d.reason}
                for r, x, d in zip(data.rows, data.texts, decisions)
            ])
        return self._summary(task, decisions, cas, tokens, output, data.skipped)

    def _summary(self, task: str, decisions: list[Decision], cas: Cascade, tokens: tuple[float, float],
                 output: Any, skipped: list[tuple[int, str]]) -> PredictSummary:
        """The end-of-run figures; teacher-only cost uses the same token estimate as the audit rows."""
        tcfg = self.config.teacher_for(task)
        n = len(decisions)
        by: dict[str, int] = {}
        for d in decisions:
            by[d.answered_by] = by.get(d.answered_by, 0) + 1
        esc = [d for d in decisions if d.teacher_label is not None]
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
            escalated_agreement=(sum(d.student_label == d.teacher_label for d in esc) / len(esc)) if esc else None,
            threshold=cas.threshold, student_version=sv.version if sv else 0,
            output=str(output) if output is not None else None, skipped=skipped,
        )

    # -- reading back ----------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """Per task: labelled examples, latest student and calibration."""
        out = []
        for name in self.config.tasks:
            sv: StudentVersion | None = self.store.latest_student(name)
            run = self.store.latest_calibration(name, student_version_id=sv.id) if sv else None
            out.append({
                "task": name, "labelled": len(self.store.labelled_examples(name)),
                "student": f"v{sv.version} ({sv.kind})" if sv else None,
                "threshold": None if run is None else run.threshold,
                "coverage": None if run is None else run.coverage,
                "spend_usd": self.store.teacher_spend(task=name),
            })
        return out


def _check_gold_labels(labels: list[str], rows: list[int], allowed: list[str], path: str) -> None:
    bad = [(r, lab) for r, lab in zip(rows, labels) if lab not in allowed]
    if bad:
        names = sorted({lab for _, lab in bad})
        where = ", ".join(f"line {r}: {lab!r}" for r, lab in bad[:5])
        raise DataError(
            f"{path}: {len(bad)} row(s) have labels not configured for the task: {names} "
            f"(e.g. {where}); configured labels: {allowed}"
        )
