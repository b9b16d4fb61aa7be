"""Spot checks: a share of student answers re-asked of the teacher, in the background.

They run on their own thread and event loop, with their own teacher clients, so that nothing
they do — the HTTP call, and the teacher client's synchronous store work (its cache lookup and
the recording of the paid call) — runs on the loop that answers requests. At most a quarter of
each teacher's ``max_concurrency`` is used for them: beyond that a check is skipped (and
counted), so they never take the slots escalated requests wait for. They share the request
path's circuit breaker, so a dead teacher is not hammered.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ..audit import AuditWriter, ShadowLabel, SpotCheckRecord
from ..config import Config, TaskConfig
from ..errors import TeacherError
from ..store import Store
from ..teacher import AsyncTeacher
from ._limits import CircuitBreaker
from ._metrics import Metrics
from ._teacher import DEADLINE, GuardedTeacher

__all__ = ["SpotChecker"]

log = logging.getLogger("downsize.server")


class SpotChecker:
    """Background spot checks (see the module docstring). ``start`` / ``close`` bracket its life."""

    #: Spot checks in flight per teacher, at most, as a share of its max_concurrency.
    share = 0.25

    def __init__(self, config: Config, store: Store, *, breakers: dict[str, CircuitBreaker], writer: AuditWriter,
                 metrics: Metrics, redact: Callable[[str], str]) -> None:
        self.config = config
        self.store = store
        self.breakers = breakers
        self.writer = writer
        self.metrics = metrics
        self.redact = redact
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._teachers: dict[str, GuardedTeacher] = {}
        self._in_flight: dict[str, int] = {}
        self._futures: set[Future[None]] = set()
        self._lock = threading.Lock()

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> SpotChecker:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="downsize-spot-checks", daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def close(self, grace_s: float = 5.0) -> None:
        """Let checks in flight finish (up to ``grace_s``, then cancel them), close the clients, stop."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with self._lock:
            futures = list(self._futures)
        if futures:
            from concurrent.futures import wait

            _, pending = wait(futures, timeout=grace_s)
            for f in pending:
                f.cancel()
        asyncio.run_coroutine_threadsafe(self._aclose(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        self._loop = self._thread = None

    async def _aclose(self) -> None:
        for g in self._teachers.values():
            await g.teacher.aclose()
        self._teachers.clear()

    # -- checks -----------------------------------------------------------------------------
    def submit(self, *, task: str, task_cfg: TaskConfig, teacher: str, text: str, answer: Any, request_id: str,
               student_version_id: int | None) -> bool:
        """Schedule one check (thread-safe, never blocks); False if skipped for the concurrency cap."""
        if self._loop is None:
            return False
        limit = max(1, int(self.config.teachers[teacher].max_concurrency * self.share))
        with self._lock:
            if self._in_flight.get(teacher, 0) >= limit:
                skipped = True
            else:
                skipped = False
                self._in_flight[teacher] = self._in_flight.get(teacher, 0) + 1
        if skipped:
            self.metrics.spot_checks.labels(task, "skipped").inc()
            return False
        fut = asyncio.run_coroutine_threadsafe(
            self._check(task, task_cfg, teacher, text, answer, request_id, student_version_id), self._loop)
        with self._lock:
            self._futures.add(fut)
        fut.add_done_callback(lambda f: self._done(f, teacher))
        return True

    def _done(self, fut: Future[None], teacher: str) -> None:
        with self._lock:
            self._futures.discard(fut)
            self._in_flight[teacher] -= 1

    def _teacher(self, name: str) -> GuardedTeacher:
        g = self._teachers.get(name)
        if g is None:  # created on this thread's loop, where its connections live
            cfg = self.config.teachers[name]
            g = self._teachers[name] = GuardedTeacher(name, cfg, AsyncTeacher.from_config(cfg, store=self.store),
                                                      self.breakers[name])
        return g

    async def _check(self, task: str, task_cfg: TaskConfig, teacher: str, text: str, answer: Any, request_id: str,
                     student_version_id: int | None) -> None:
        DEADLINE.set(asyncio.get_running_loop().time() + max(30.0, self.config.server.deadline_s))
        teacher_answer: Any = None
        cost = 0.0
        call_id = None
        try:
            ans = await self._teacher(teacher).ask(text, task_name=task, task=task_cfg)
            teacher_answer, cost, call_id = ans.answer, ans.cost_usd, ans.call_id
        except TeacherError as exc:
            log.info("spot check of %s (task %s): the teacher failed: %s", request_id, task, self.redact(str(exc)))
        except Exception as exc:  # a spot check must never take anything down
            log.error("spot check of %s (task %s) failed: %s", request_id, task, self.redact(repr(exc)))
        # a failed check (no teacher answer) has no loss: the risk monitor counts it neither way
        loss = None if teacher_answer is None else task_cfg.disagreement(answer, teacher_answer)
        if teacher_answer is not None:  # a uniform sample of the answered requests: a label too
            self.writer.submit_label(ShadowLabel(task, text, task_cfg.encode(teacher_answer), call_id, "spot_check"))
        self.writer.submit_spot_check(SpotCheckRecord(
            request_id=request_id, task=task, student_version_id=student_version_id,
            student_label=task_cfg.encode(answer),
            teacher_label=None if teacher_answer is None else task_cfg.encode(teacher_answer),
            loss=loss, teacher_cost_usd=cost))
        self.metrics.spot_checks.labels(task, "teacher_failed" if loss is None else
                                        ("agree" if loss == 0 else "disagree")).inc()
        if cost:
            self.metrics.teacher_cost.labels(task, "spot_check").inc(cost)
