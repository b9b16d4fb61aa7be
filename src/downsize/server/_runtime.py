"""One task as the gateway serves it: its student (micro-batched), λ, and mode.

* ``cascade``: the student answers when its confidence clears λ; otherwise the teacher
  (within the request's deadline); if the teacher fails, the student's answer is returned as
  ``student_fallback``.
* ``shadow`` (``mode: shadow`` in the config, or no calibrated student yet): the teacher
  answers and its label is recorded as training data; the student's would-be answer, if
  there is a student, is logged beside it.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..audit import AuditWriter
from ..cascade import Cascade, Decision
from ..config import TaskConfig, TeacherConfig
from ..errors import TeacherError, TeacherResponseError
from ._teacher import GuardedTeacher

__all__ = ["TaskRuntime"]


# -- micro-batching the student ------------------------------------------------------
Score = tuple[str, float, float, float]  # label, confidence, batch wall ms, this row's share of CPU ms


class _Batcher:
    """Scores concurrent requests in one ``predict_proba`` call.

    Requests that arrive in the same event-loop turn (or, with ``offload``, while the
    previous batch runs in the student's thread) share a batch: no waiting is added.
    """

    def __init__(self, cascade: Cascade, *, max_batch: int = 128, offload: bool = False) -> None:
        self.cascade = cascade
        self.max_batch = max_batch
        self._pending: list[tuple[str, asyncio.Future[Score]]] = []
        self._busy = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="downsize-student") if offload else None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def score(self, text: str) -> asyncio.Future[Score]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Score] = loop.create_future()
        self._pending.append((text, fut))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._next)
        return fut

    def _take(self) -> list[tuple[str, asyncio.Future[Score]]]:
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

    def _compute(self, texts: list[str]) -> list[Score | BaseException]:
        try:
            labels, conf, ms, cpu = self.cascade.student_scores(texts)
            share = cpu / len(texts)
            return [(labels[i], float(conf[i]), ms, share) for i in range(len(texts))]
        except Exception:
            if len(texts) == 1:
                raise
        out: list[Score | BaseException] = []  # one bad text must not fail the others
        for t in texts:
            try:
                out.extend(self._compute([t]))
            except Exception as exc:
                out.append(exc)
        return out

    @staticmethod
    def _deliver(batch: list[tuple[str, asyncio.Future[Score]]], results: list[Score | BaseException]) -> None:
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
                 cascade: Cascade | None, calibrated: bool, mode_reason: str, tokens: tuple[float, float],
                 writer: AuditWriter, student_kind: str | None = None, load_error: str | None = None) -> None:
        self.name = name
        self.cfg = cfg
        self.tcfg = tcfg
        self.teacher = teacher
        self.cascade = cascade
        self.calibrated = calibrated
        self.mode = "cascade" if calibrated and cfg.mode == "cascade" else "shadow"
        self.mode_reason = mode_reason
        self.tokens = tokens
        self.writer = writer
        self.student_kind = student_kind
        self.load_error = load_error
        self.batcher = _Batcher(cascade, offload=student_kind not in (None, "tfidf")) if cascade else None

    @property
    def threshold(self) -> float | None:
        return self.cascade.threshold if self.cascade is not None else None

    @property
    def student_version_id(self) -> int | None:
        return self.cascade.student_version_id if self.cascade is not None else None

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "reason": self.mode_reason, "student_version_id": self.student_version_id,
                "student_kind": self.student_kind, "threshold": self.threshold, "calibrated": self.calibrated,
                "teacher": self.teacher.name, "load_error": self.load_error}

    async def answer(self, text: str) -> Decision:
        """The decision for one text (``latency_ms`` is this runtime's time; the route adds its own).

        Raises
        ------
        TeacherError
            Only in shadow mode without a student, when the teacher fails.
        """
        t0 = time.perf_counter()
        if self.mode == "cascade":
            assert self.cascade is not None and self.batcher is not None
            lab, conf, ms, cpu = await self.batcher.score(text)
            if self.cascade.answers_locally(conf):
                return Decision(lab, conf, "student", f"confidence {conf:.3f} >= threshold {self.threshold:.3f}",
                                (time.perf_counter() - t0) * 1000, lab, ms, student_cpu_ms=cpu)
            d = (await self.cascade.apredict([text]))[0]
            d.latency_ms = (time.perf_counter() - t0) * 1000
            d.student_latency_ms = ms
            d.student_cpu_ms = cpu + (d.student_cpu_ms or 0.0)
            return d
        return await self._shadow(text, t0)

    async def _shadow(self, text: str, t0: float) -> Decision:
        lab: str | None = None
        conf: float | None = None
        ms: float | None = None
        cpu: float | None = None
        if self.batcher is not None:
            lab, conf, ms, cpu = await self.batcher.score(text)
        try:
            ans = await self.teacher.classify(text, task_name=self.name, task=self.cfg)
            if ans.label is None:
                raise TeacherResponseError(f"the teacher's answer is not one of the labels: {ans.error}", ans.raw)
        except TeacherError as exc:
            if lab is None:
                raise
            return Decision(lab, conf, "student_fallback",  # type: ignore[arg-type]
                            f"shadow mode ({self.mode_reason}); teacher failed: {type(exc).__name__}",
                            (time.perf_counter() - t0) * 1000, lab, ms, teacher_error=str(exc)[:300],  # type: ignore[arg-type]
                            student_cpu_ms=cpu)
        self.writer.submit_label(self.name, text, ans.label, ans.call_id)
        return Decision(ans.label, conf, "shadow", f"shadow mode: {self.mode_reason}",  # type: ignore[arg-type]
                        (time.perf_counter() - t0) * 1000, lab, ms, teacher_label=ans.label,  # type: ignore[arg-type]
                        teacher_latency_ms=ans.latency_ms, teacher_cost_usd=ans.cost_usd,
                        teacher_input_tokens=ans.input_tokens, teacher_output_tokens=ans.output_tokens,
                        teacher_cached=ans.cached, student_cpu_ms=cpu)
