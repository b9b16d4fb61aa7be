"""The cascade, and the one rule that decides who answers a request.

:func:`decide` is the decision rule, and the only one: ``predict``, ``eval``, the gateway's chat
and batch routes and shadow mode all call it (spot checks compare its student answers with the
teacher's by the kind's loss). Given the student's answer for a text — scored once, in a batch,
by :meth:`Cascade.score` — and the task's :class:`Policy`:

* **cascade** (a calibrated λ): the student answers when its confidence is ≥ λ; otherwise the
  teacher is asked (cache first), and if the teacher fails the student's answer is returned,
  marked :attr:`AnsweredBy.STUDENT_FALLBACK`. No row is ever dropped.
* **shadow** (``mode: shadow``, or no calibrated student yet): the teacher answers and its answer
  becomes a label; the student's would-be answer, if there is a student, is kept beside it.

Answers are typed by the task's kind (:mod:`downsize.tasks`): nothing here depends on what they are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from .errors import TeacherError, TeacherResponseError
from .tasks import TaskConfig

__all__ = ["AnsweredBy", "Scored", "Policy", "Decision", "decide", "Cascade"]


class AnsweredBy(StrEnum):
    """Who answered a request: every value the audit log, the metrics and the report know."""

    STUDENT = "student"  #: the student, confident enough
    TEACHER = "teacher"  #: the teacher, after the student escalated
    STUDENT_FALLBACK = "student_fallback"  #: the student, because the teacher failed
    SHADOW = "shadow"  #: the teacher, in shadow mode (its answer becomes a label)
    PASSTHROUGH = "passthrough"  #: the teacher, for a model that is not a downsize task
    ERROR = "error"  #: nobody: the request failed


@dataclass(frozen=True, slots=True)
class Scored:
    """The student's answer for one text and how long scoring its batch took."""

    answer: Any
    confidence: float
    #: the student's time for this text: the wall time of the batch that scored it in the gateway
    #: (what the request waited), its per-text share in a bulk run (``predict``, ``eval``)
    latency_ms: float
    cpu_ms: float  #: this text's share of the batch's process CPU time


@dataclass(frozen=True, slots=True)
class Policy:
    """How a task is served right now.

    ``threshold`` is the calibrated λ (None: none qualified, so every request escalates);
    ``shadow`` is the reason the task runs in shadow mode, or None in cascade mode.
    """

    threshold: float | None = None
    shadow: str | None = None

    def local(self, confidence: float) -> bool:
        """Whether the student may answer at this confidence."""
        return self.shadow is None and self.threshold is not None and confidence >= self.threshold


@dataclass
class Decision:
    """One answered request and why it was answered that way."""

    answer: Any
    answered_by: AnsweredBy
    reason: str
    latency_ms: float
    confidence: float | None = None
    student_answer: Any = None
    student_latency_ms: float | None = None
    student_cpu_ms: float | None = None
    teacher_answer: Any = None
    teacher_latency_ms: float | None = None
    teacher_cost_usd: float = 0.0
    teacher_input_tokens: int = 0
    teacher_output_tokens: int = 0
    teacher_cached: bool = False
    teacher_error: str | None = None
    teacher_call_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Asks the teacher for the answer to this request's text.
AskTeacher = Callable[[], Awaitable[Any]]


async def decide(policy: Policy, scored: Scored | None, ask: AskTeacher | None) -> Decision:
    """Who answers one request, and the answer (see the module docstring).

    Parameters
    ----------
    policy : Policy
    scored : Scored or None
        The student's answer (None: the task has no student).
    ask : callable or None
        Returns the teacher's :class:`~downsize.teacher.TeacherAnswer`; None when there is no teacher.

    Raises
    ------
    TeacherError
        Only when there is no student's answer to fall back on and the teacher failed.
    """
    student = {} if scored is None else {
        "confidence": scored.confidence, "student_answer": scored.answer,
        "student_latency_ms": scored.latency_ms, "student_cpu_ms": scored.cpu_ms}
    own_ms = 0.0 if scored is None else scored.latency_ms
    if scored is not None and policy.local(scored.confidence):
        return Decision(scored.answer, AnsweredBy.STUDENT,
                        f"confidence {scored.confidence:.3f} >= threshold {policy.threshold:.3f}", own_ms, **student)
    if policy.shadow is not None:
        why, fails, answered_by = f"shadow mode: {policy.shadow}", f"shadow mode ({policy.shadow})", AnsweredBy.SHADOW
    else:
        why = ("no calibrated threshold: teacher only" if policy.threshold is None or scored is None
               else f"confidence {scored.confidence:.3f} < threshold {policy.threshold:.3f}")
        fails, answered_by = why, AnsweredBy.TEACHER
    if ask is None:
        if scored is None:
            raise TeacherError("no teacher is configured and there is no student to answer")
        return Decision(scored.answer, AnsweredBy.STUDENT_FALLBACK, f"{fails}; no teacher configured", own_ms,
                        teacher_error="no teacher", **student)
    t0 = time.perf_counter()
    try:
        ans = await ask()
    except TeacherError as exc:
        if scored is None:
            raise
        return Decision(scored.answer, AnsweredBy.STUDENT_FALLBACK, f"{fails}; teacher failed: {type(exc).__name__}",
                        own_ms + (time.perf_counter() - t0) * 1000, teacher_error=str(exc)[:300], **student)
    teacher = {"teacher_latency_ms": ans.latency_ms, "teacher_cost_usd": ans.cost_usd,
               "teacher_input_tokens": ans.input_tokens, "teacher_output_tokens": ans.output_tokens,
               "teacher_cached": ans.cached, "teacher_call_id": ans.call_id}
    if ans.answer is None:
        if scored is None:
            raise TeacherResponseError(f"the teacher's answer does not fit the task: {ans.error}", ans.raw)
        return Decision(scored.answer, AnsweredBy.STUDENT_FALLBACK, f"{fails}; teacher answer unparseable",
                        own_ms + ans.latency_ms, teacher_error=ans.error or "parse_error", **student, **teacher)
    return Decision(ans.answer, answered_by, why, own_ms + ans.latency_ms, teacher_answer=ans.answer,
                    **student, **teacher)


class Cascade:
    """A task's student, its policy and its teacher: student first, teacher when it may be wrong.

    Parameters
    ----------
    task : TaskConfig
        The task (its kind scores the student and builds the teacher's prompt).
    task_name : str
    student : fitted student or None
        None: every request goes to the teacher (shadow mode).
    policy : Policy
    teacher : AsyncTeacher or None
        Asked for escalated requests; without one they fall back to the student.
    student_version_id, calibration_run_id : int or None
        Where the student and its λ come from (recorded in the audit log).
    student_kind : str or None
        The student's family (``tfidf``...), when there is a student.
    load_error : str or None
        Why the task's student could not be loaded, when it could not (then ``student`` is None).
    """

    def __init__(self, task: TaskConfig, *, task_name: str, student: Any | None, policy: Policy,
                 teacher: Any | None = None, student_version_id: int | None = None,
                 calibration_run_id: int | None = None, student_kind: str | None = None,
                 load_error: str | None = None) -> None:
        self.task = task
        self.task_name = task_name
        self.student = student
        self.policy = policy
        self.teacher = teacher
        self.student_version_id = student_version_id
        self.calibration_run_id = calibration_run_id
        self.student_kind = student_kind
        self.load_error = load_error

    @property
    def threshold(self) -> float | None:
        return self.policy.threshold

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        self.policy = replace(self.policy, threshold=value)

    def score(self, texts: Sequence[str]) -> list[Scored]:
        """The student's answers for ``texts`` in one batched call (empty without a student)."""
        texts = list(texts)
        if self.student is None or not texts:
            return []
        t0, c0 = time.perf_counter(), time.process_time()
        answers, conf = self.task.score(self.student, texts)
        ms, cpu = (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000
        per_ms, per_cpu = ms / len(texts), cpu / len(texts)
        return [Scored(a, float(c), per_ms, per_cpu) for a, c in zip(answers, conf)]

    async def decide(self, text: str, scored: Scored | None, *, budget: Any | None = None) -> Decision:
        """:func:`decide` for one text, asking this cascade's teacher."""
        ask = None
        if self.teacher is not None:
            def ask() -> Awaitable[Any]:
                return self.teacher.ask(text, task_name=self.task_name, task=self.task, budget=budget)
        return await decide(self.policy, scored, ask)

    async def apredict(self, texts: Sequence[str], *, budget: Any | None = None) -> list[Decision]:
        """Answer every text; escalated ones go to the teacher concurrently (bounded by its client)."""
        texts = list(texts)
        scored: Sequence[Scored | None] = self.score(texts) or [None] * len(texts)
        return list(await asyncio.gather(*(self.decide(x, s, budget=budget) for x, s in zip(texts, scored))))
