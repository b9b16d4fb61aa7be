"""The cascade: the student answers when its confidence clears the calibrated threshold λ,
otherwise the teacher is asked (cache first); if the teacher fails, the student's answer is
returned and marked ``student_fallback``. No row is ever dropped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from .config import TaskConfig
from .errors import TeacherError

__all__ = ["Decision", "Cascade", "ANSWERED_BY"]

#: Who answered a request.
ANSWERED_BY = ("student", "teacher", "student_fallback")


class _Student(Protocol):
    classes_: np.ndarray

    def predict_proba(self, X: Sequence[str]) -> np.ndarray: ...


@dataclass
class Decision:
    """One answered request and why it was answered that way."""

    label: str
    confidence: float
    answered_by: str  # student | teacher | student_fallback
    reason: str
    latency_ms: float
    student_label: str
    student_latency_ms: float
    teacher_label: str | None = None
    teacher_latency_ms: float | None = None
    teacher_cost_usd: float = 0.0
    teacher_input_tokens: int = 0
    teacher_output_tokens: int = 0
    teacher_cached: bool = False
    teacher_error: str | None = None
    student_cpu_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Cascade:
    """Student first, teacher when the student may be wrong.

    Parameters
    ----------
    student : fitted student
        Anything with ``predict_proba`` and ``classes_``.
    threshold : float or None
        The calibrated λ. ``None`` means no threshold qualified: every request goes to the teacher.
    teacher : AsyncTeacher or None
        Asked for escalated requests. Without one, escalations fall back to the student.
    task_name, task :
        The task (its labels and instructions build the teacher prompt).
    """

    def __init__(
        self,
        student: _Student,
        *,
        threshold: float | None,
        teacher: Any | None,
        task_name: str,
        task: TaskConfig,
        student_version_id: int | None = None,
        calibration_run_id: int | None = None,
    ) -> None:
        self.student = student
        self.threshold = threshold
        self.teacher = teacher
        self.task_name = task_name
        self.task = task
        self.student_version_id = student_version_id
        self.calibration_run_id = calibration_run_id

    # -- the student half -----------------------------------------------------------------
    def student_scores(self, texts: Sequence[str]) -> tuple[list[str], np.ndarray, float, float]:
        """Batched student labels and confidences, plus the batch's wall and process-CPU time in ms."""
        t0, c0 = time.perf_counter(), time.process_time()
        proba = self.student.predict_proba(list(texts))
        ms, cpu_ms = (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000
        idx = proba.argmax(axis=1)
        labels = [str(self.student.classes_[i]) for i in idx]
        return labels, proba.max(axis=1), ms, cpu_ms

    def answers_locally(self, confidence: float) -> bool:
        return self.threshold is not None and confidence >= self.threshold

    # -- the whole cascade -------------------------------------------------------------
    async def apredict(self, texts: Sequence[str], *, budget: Any | None = None) -> list[Decision]:
        """Answer every text; escalated ones go to the teacher concurrently (bounded by its client)."""
        texts = list(texts)
        if not texts:
            return []
        labels, conf, batch_ms, cpu_ms = self.student_scores(texts)
        per_row_ms = batch_ms / len(texts)
        per_row_cpu = cpu_ms / len(texts)
        out: list[Decision | None] = [None] * len(texts)
        escalate: list[int] = []
        for i, (lab, c) in enumerate(zip(labels, conf)):
            if self.answers_locally(float(c)):
                out[i] = Decision(
                    label=lab,
                    confidence=float(c),
                    answered_by="student",
                    reason=f"confidence {c:.3f} >= threshold {self.threshold:.3f}",
                    latency_ms=per_row_ms,
                    student_label=lab,
                    student_latency_ms=per_row_ms,
                )
            else:
                escalate.append(i)

        async def ask(i: int) -> None:
            lab, c = labels[i], float(conf[i])
            why = (
                "no calibrated threshold: teacher only"
                if self.threshold is None
                else f"confidence {c:.3f} < threshold {self.threshold:.3f}"
            )
            if self.teacher is None:
                out[i] = Decision(lab, c, "student_fallback", why + "; no teacher configured",
                                  per_row_ms, lab, per_row_ms, teacher_error="no teacher")
                return
            t0 = time.perf_counter()
            try:
                ans = await self.teacher.classify(texts[i], task_name=self.task_name, task=self.task, budget=budget)
            except TeacherError as exc:
                out[i] = Decision(lab, c, "student_fallback", f"{why}; teacher failed: {type(exc).__name__}",
                                  per_row_ms + (time.perf_counter() - t0) * 1000, lab, per_row_ms,
                                  teacher_error=str(exc)[:300])
                return
            t_ms = ans.latency_ms  # the teacher's time, not our wait for a concurrency slot
            if ans.label is None:
                out[i] = Decision(lab, c, "student_fallback", f"{why}; teacher answer unparseable",
                                  per_row_ms + t_ms, lab, per_row_ms, teacher_latency_ms=t_ms,
                                  teacher_cost_usd=ans.cost_usd, teacher_input_tokens=ans.input_tokens,
                                  teacher_output_tokens=ans.output_tokens, teacher_cached=ans.cached,
                                  teacher_error=ans.error or "parse_error")
                return
            out[i] = Decision(
                label=ans.label, confidence=c, answered_by="teacher", reason=why,
                latency_ms=per_row_ms + t_ms, student_label=lab, student_latency_ms=per_row_ms,
                teacher_label=ans.label, teacher_latency_ms=t_ms, teacher_cost_usd=ans.cost_usd,
                teacher_input_tokens=ans.input_tokens, teacher_output_tokens=ans.output_tokens,
                teacher_cached=ans.cached,
            )

        if escalate:
            await asyncio.gather(*(ask(i) for i in escalate))
        done = [d for d in out if d is not None]
        for d in done:
            d.student_cpu_ms = per_row_cpu
        return done
