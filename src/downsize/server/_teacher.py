"""The teacher behind the per-request deadline and a circuit breaker.

A slow teacher costs a request at most its deadline (``server.deadline_s``); a dead one, after
a few failures in a row, costs nothing: the breaker opens and escalations go straight to the
student's answer (``student_fallback``), or to a 503 for pass-through, until a probe succeeds.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..config import TaskConfig, TeacherConfig
from ..errors import TeacherError, TeacherResponseError, TeacherStatusError, TeacherTimeout
from ..teacher import AsyncTeacher, ChatResult, TeacherAnswer
from ._limits import CircuitBreaker

__all__ = ["DEADLINE", "GuardedTeacher", "TeacherUnavailable"]

T = TypeVar("T")

#: Event-loop time by which the current request must be answered (None: no deadline).
DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("downsize_deadline", default=None)


class TeacherUnavailable(TeacherError):
    """The teacher's circuit breaker is open: it failed repeatedly just now, so it is not asked."""


class GuardedTeacher:
    """An :class:`~downsize.teacher.AsyncTeacher` that honours :data:`DEADLINE` and a breaker.

    Timeouts (the deadline's or the client's), unreachable servers, 429 and 5xx count as
    failures; any other answer (even a 4xx or an unusable answer) shows the teacher is up.
    """

    def __init__(self, name: str, cfg: TeacherConfig, teacher: AsyncTeacher, breaker: CircuitBreaker) -> None:
        self.name = name
        self.cfg = cfg
        self.teacher = teacher
        self.breaker = breaker

    @property
    def model(self) -> str:
        return self.teacher.model

    async def _guard(self, call: Callable[[], Awaitable[T]]) -> T:
        if not self.breaker.allow():
            raise TeacherUnavailable(
                f"the teacher {self.name!r} failed {self.breaker.failures} times in a row; "
                f"not asked again for {self.breaker.retry_in():.1f}s"
            )
        deadline = DEADLINE.get()
        try:
            if deadline is None:
                result = await call()
            else:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    result = await call()
        except TimeoutError:
            self.breaker.failure()
            raise TeacherTimeout(f"no answer from the teacher {self.name!r} within the request deadline") from None
        except TeacherStatusError as exc:
            (self.breaker.failure if exc.status == 429 or exc.status >= 500 else self.breaker.success)()
            raise
        except TeacherResponseError:
            self.breaker.success()
            raise
        except TeacherError:
            self.breaker.failure()
            raise
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.success()
        return result

    async def ask(self, text: str, *, task_name: str, task: TaskConfig, budget: Any = None) -> TeacherAnswer:
        return await self._guard(lambda: self.teacher.ask(text, task_name=task_name, task=task, budget=budget))

    async def chat(self, messages: list[dict[str, Any]], **kwargs: Any) -> ChatResult:
        return await self._guard(lambda: self.teacher.chat(messages, **kwargs))
