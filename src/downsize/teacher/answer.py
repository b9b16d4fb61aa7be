"""What asking the teacher gives back: :class:`TeacherAnswer`, from a fresh call or the cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import AnswerError
from ..store import TeacherCall
from ..tasks import TaskConfig

__all__ = ["TeacherAnswer", "Outcome", "from_cache", "parse_answer"]


@dataclass
class TeacherAnswer:
    """The teacher's answer for one text.

    ``answer`` is always a valid answer of the task (normalised by its kind), or None with
    ``status='parse_error'``. Tokens are those of the calls behind the answer (cached or not);
    ``cost_usd`` is what was paid *now* (0 for a cache hit). ``http_requests`` counts the HTTP
    requests made (retries included, 0 when cached) and ``cache_hits`` the calls served from the store.
    """

    answer: Any
    raw: str
    status: str  # ok | parse_error
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    cached: bool = False
    call_id: int | None = None
    error: str | None = None
    http_requests: int = 0
    cache_hits: int = 0
    reclaimed: int = 0  # calls taken over from a caller that died or ran out of lease: maybe paid twice
    by_other: bool = False  # the answer another live caller (a concurrent run) paid for and records


@dataclass
class Outcome:
    """One answered call: fresh or from the cache."""

    answer: Any
    raw: str
    error: str | None
    row: TeacherCall | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cached: bool
    http_requests: int
    latency_ms: float = 0.0  # the teacher's time for a fresh call (no queueing); 0 from the cache
    reclaimed: bool = False  # sent again after another caller's claim expired or was orphaned
    by_other: bool = False  # from a record another live caller made while this one asked


def parse_answer(task: TaskConfig, raw: str, text: str) -> tuple[Any, str | None]:
    """(answer, None) or (None, why it is not one) for the teacher's ``raw`` completion about ``text``."""
    try:
        return task.parse(raw, text), None
    except AnswerError as exc:
        return None, str(exc)


def from_cache(row: TeacherCall, task: TaskConfig, text: str, http_requests: int) -> Outcome:
    """The outcome of a call recorded earlier: its answer decoded by the task (free now)."""
    raw = row.raw_response or ""
    answer, error = None, row.error
    if row.status == "ok" and row.parsed_label is not None:
        try:
            answer = task.decode(row.parsed_label)
        except AnswerError as exc:  # recorded under another version of the task's answer set
            error = str(exc)
    if answer is None and error is None:
        error = parse_answer(task, raw, text)[1]
    return Outcome(answer, raw, error, row, row.input_tokens, row.output_tokens, 0.0, http_requests == 0,
                   http_requests)
