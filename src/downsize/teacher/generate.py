"""Free-text calls (``downsize synth`` asking the teacher to write examples), cached and budgeted.

The same machinery as :meth:`AsyncTeacher.ask`: the request's content address is looked up in
the store first (a re-run or a resumed job pays nothing), the worst-case cost is reserved in the
budget and the call claimed in the store before sending (a call another process is making is
waited for and read from its record, never paid twice), and the paid call is recorded (``status='ok'``, ``parsed_label`` empty)
before its text is used. There is no answer schema and no repair: the text is the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..store import TeacherCall
from .budget import Budget

__all__ = ["Generated", "generate"]


@dataclass
class Generated:
    """One generated text; ``cost_usd`` is what was paid now (0 from the cache)."""

    text: str
    cached: bool
    cost_usd: float
    input_tokens: int
    output_tokens: int
    http_requests: int
    call_id: int | None


async def generate(teacher: Any, messages: list[dict[str, Any]], *, task_name: str, budget: Budget | None = None,
                   max_tokens: int = 256, temperature: float = 0.9) -> Generated:
    """Ask ``teacher`` (an :class:`~downsize.teacher.AsyncTeacher`) for free text, once per distinct request.

    Raises
    ------
    BudgetExceeded
        Before sending a call that could take the spend past the budget.
    TeacherError
        The call failed after retries (nothing is recorded).
    """
    import asyncio

    from ..store import BUSY, RECORDED

    key = teacher.request_hash(messages, None, max_tokens)
    polls = 0
    while True:
        row = await teacher.cache.get(key)
        if row is not None:
            return Generated(row.raw_response or "", True, 0.0, row.input_tokens, row.output_tokens, 0, row.id)
        estimate = teacher.worst_case_cost(messages, max_tokens)
        reservation = budget.reserve(estimate) if budget is not None else None
        try:
            state = await teacher.cache.claim(key, reserve_usd=estimate, budget=budget, task=task_name)
        except BaseException:
            _settle(budget, reservation, 0.0)
            raise
        if state not in (RECORDED, BUSY):
            break
        _settle(budget, reservation, 0.0)  # another caller asked it: read its record (once it is written)
        if state == BUSY:
            await asyncio.sleep(min(0.5, 0.02 * 2 ** min(polls, 5)))
            polls += 1
    try:
        result = await teacher.chat(messages, max_tokens=max_tokens, temperature=temperature)
    except BaseException as exc:
        teacher.cache.release(key, abandoned=not isinstance(exc, Exception))  # failed calls are not paid
        _settle(budget, reservation, 0.0)
        raise
    cost = teacher.cost(result.input_tokens, result.output_tokens)
    _settle(budget, reservation, cost)
    row = await teacher.cache.record(TeacherCall(
        request_hash=key, base_url=teacher.base_url, model=teacher.model, task=task_name, prompt=messages,
        schema_json=None, raw_response=result.content, parsed_label=None, input_tokens=result.input_tokens,
        output_tokens=result.output_tokens, cost_usd=cost, latency_ms=result.latency_ms, status="ok", error=None,
        attempts=result.attempts))
    return Generated(result.content, False, cost, result.input_tokens, result.output_tokens, result.attempts,
                     row.id if row is not None else None)



def _settle(budget: Budget | None, reservation: Any, amount: float) -> None:
    if budget is not None and reservation is not None:
        budget.commit(reservation, amount)
