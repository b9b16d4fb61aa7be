"""One task as the gateway serves it: its cascade (student micro-batched, policy, teacher).

The policy — cascade or shadow, and why — comes from :meth:`downsize.project.Project.cascade`;
who answers each request is :func:`downsize.cascade.decide`'s call. In shadow mode (and while the
task is suspended) the teacher's answers are queued as labels, and so are escalated ones (origin
``escalation``); the lifecycle loop (``_lifecycle``) swaps in a newly promoted version with
:meth:`TaskRuntime.swap`.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from ..audit import AuditWriter, ShadowLabel
from ..cascade import AnsweredBy, Cascade, Decision, Scored
from ..config import TaskConfig, TeacherConfig
from ._teacher import GuardedTeacher

__all__ = ["TaskRuntime"]


# -- micro-batching the student ------------------------------------------------------
class _Batcher:
    """Scores concurrent requests in one call of the student (:meth:`~downsize.cascade.Cascade.score`).

    Requests that arrive in the same event-loop turn (or, with ``offload``, while the
    previous batch runs in the student's thread) share a batch: no waiting is added.
    """

    def __init__(self, cascade: Cascade, *, max_batch: int = 128, offload: bool = False) -> None:
        self.cascade = cascade
        self.max_batch = max_batch
        self._pending: list[tuple[str, asyncio.Future[Scored]]] = []
        self._busy = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="downsize-student") if offload else None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def score(self, text: str) -> asyncio.Future[Scored]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Scored] = loop.create_future()
        self._pending.append((text, fut))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._next)
        return fut

    def _take(self) -> list[tuple[str, asyncio.Future[Scored]]]:
        batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
        return [(t, f) for t, f in batch if not f.done()]

    def _next(self) -> None:
        batch = self._take()
        if not batch:
            self._busy = bool(self._pending)
            if self._busy:
                asyncio.get_running_loop().call_soon(self._next)
            return
        texts = [t for t, _ in batch]
        if self._executor is None:
            self._deliver(batch, self._compute(texts))
            self._after()
        else:
            loop = asyncio.get_running_loop()
            job = loop.run_in_executor(self._executor, self._compute, texts)
            job.add_done_callback(lambda j: (self._deliver(batch, j.result()), self._after()))

    def _after(self) -> None:
        if self._pending:
            asyncio.get_running_loop().call_soon(self._next)
        else:
            self._busy = False

    def _compute(self, texts: list[str]) -> list[Scored | BaseException]:
        try:
            scored = self.cascade.score(texts)
            batch_ms = sum(s.latency_ms for s in scored)  # what each request of the batch waited
            return [replace(s, latency_ms=batch_ms) for s in scored]
        except Exception:
            if len(texts) == 1:
                raise
        out: list[Scored | BaseException] = []  # one bad text must not fail the others
        for t in texts:
            try:
                out.extend(self._compute([t]))
            except Exception as exc:
                out.append(exc)
        return out

    @staticmethod
    def _deliver(batch: list[tuple[str, asyncio.Future[Scored]]], results: list[Scored | BaseException]) -> None:
        for (_, fut), res in zip(batch, results):
            if fut.done():
                continue
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)


# -- one task ------------------------------------------------------------------------
class TaskRuntime:
    """One task as the gateway serves it (see the module docstring)."""

    def __init__(self, name: str, cfg: TaskConfig, tcfg: TeacherConfig, teacher: GuardedTeacher, *,
                 cascade: Cascade, tokens: tuple[float, float], writer: AuditWriter) -> None:
        self.name = name
        self.cfg = cfg
        self.tcfg = tcfg
        self.teacher = teacher
        self.tokens = tokens
        self.writer = writer
        self._serving = (cascade, self._batcher_for(cascade))
        #: set by the gateway's lifecycle loop (server/_lifecycle.py)
        self.live_key: str | None = None
        self.lifecycle: dict[str, Any] = {}
        self.boost_until = 0.0  # monotonic time until which a drift warning raises the spot-check rate

    @staticmethod
    def _batcher_for(cascade: Cascade) -> _Batcher | None:
        kind = cascade.student_kind
        return _Batcher(cascade, offload=kind not in (None, "tfidf")) if cascade.student is not None else None

    @property
    def cascade(self) -> Cascade:
        return self._serving[0]

    @property
    def batcher(self) -> _Batcher | None:
        return self._serving[1]

    def swap(self, cascade: Cascade) -> _Batcher | None:
        """Serve ``cascade`` from now on (one assignment: a request sees the old pair or the new one,
        never a mix); returns the old batcher, which finishes what it holds and is closed later."""
        old = self._serving[1]
        self._serving = (cascade, self._batcher_for(cascade))
        return old

    @property
    def suspended(self) -> bool:
        return (self.cascade.policy.shadow or "").startswith("suspended:")

    @property
    def spot_check_rate(self) -> float:
        """The configured rate, or the drift rate while a drift warning lasts."""
        if self.boost_until and time.monotonic() < self.boost_until:
            return max(self.cfg.spot_check_rate, self.cfg.drift_spot_check_rate)
        return self.cfg.spot_check_rate

    @property
    def mode(self) -> str:
        if self.suspended:
            return "suspended"
        return "shadow" if self.cascade.policy.shadow is not None else "cascade"

    @property
    def mode_reason(self) -> str:
        c = self.cascade
        if c.policy.shadow is not None:
            return c.policy.shadow
        if c.threshold is None:
            return f"calibrated {c.student_kind} student #{c.student_version_id}, but no threshold qualified: teacher only"
        return f"calibrated {c.student_kind} student #{c.student_version_id}, threshold {c.threshold:.4f}"

    @property
    def threshold(self) -> float | None:
        return self.cascade.threshold

    @property
    def student_version_id(self) -> int | None:
        return self.cascade.student_version_id

    def health(self) -> tuple[str, str | None]:
        """``("ok", None)``, or ``("degraded", why)`` when the task runs without the student it should
        have (its files are missing or corrupt: the teacher answers everything) or is suspended."""
        c = self.cascade
        if c.load_error:
            return "degraded", f"task {self.name!r} runs without its student, the teacher answers all: {c.load_error}"
        if self.suspended:
            return "degraded", f"task {self.name!r} is {c.policy.shadow} (every request goes to the teacher)"
        return "ok", None

    def describe(self) -> dict[str, Any]:
        c = self.cascade
        status, why = self.health()
        return {"status": status, "status_reason": why,
                "mode": self.mode, "reason": self.mode_reason, "student_version_id": c.student_version_id,
                "student_kind": c.student_kind, "threshold": c.threshold,
                "calibrated": c.calibration_run_id is not None, "teacher": self.teacher.name,
                "load_error": c.load_error, "spot_check_rate": self.spot_check_rate, **self.lifecycle}

    async def answer(self, text: str) -> Decision:
        """The decision for one text (``latency_ms`` is this runtime's time; the route adds its own).

        Raises
        ------
        TeacherError
            Only when there is no student to fall back on and the teacher fails.
        """
        t0 = time.perf_counter()
        cascade, batcher = self._serving  # one version for the whole request, even across a swap
        scored = await batcher.score(text) if batcher is not None else None
        d = await cascade.decide(text, scored)
        if d.answered_by is AnsweredBy.SHADOW:
            self.writer.submit_label(ShadowLabel(self.name, text, self.cfg.encode(d.answer), d.teacher_call_id))
        elif d.answered_by is AnsweredBy.TEACHER:  # selected by low confidence: trained on, never calibrated on
            self.writer.submit_label(ShadowLabel(self.name, text, self.cfg.encode(d.answer), d.teacher_call_id,
                                                 "escalation"))
        d.latency_ms = (time.perf_counter() - t0) * 1000
        return d
