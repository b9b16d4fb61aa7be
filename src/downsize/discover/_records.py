"""The record types of the log readers (kept apart so the format parsers can share them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

__all__ = ["BadLine", "BadRow", "FileReport", "LogRead", "LogRecord", "ReadReport"]


class BadRow(ValueError):
    """A row that cannot be read; its message says why (the reader adds the line number)."""


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One logged LLM request and its answer.

    Attributes
    ----------
    messages : tuple of (role, text)
        The request's messages in order, content flattened to text.
    response : str or None
        The assistant's answer text; ``None`` when the request failed or no answer was stored.
    model : str
        The model the request named (as logged).
    input_tokens, output_tokens : int or None
        Usage as logged (``None``: not logged; profiles then estimate 4 characters a token).
    latency_ms : float or None
    ts : datetime or None
        When the request was made (naive UTC).
    cost_usd : float or None
        Cost as logged (LiteLLM ``spend``, downsize ``teacher_cost_usd``); ``None``: priced later.
    batch : bool
        From the OpenAI Batch API (billed at half the list price).
    source : str
        ``file:line`` (``file:N`` for the N-th item of a JSON array) of the record.
    id : str or None
        The log's own id of the request (``custom_id``, LiteLLM ``request_id``, downsize
        ``request_id``, or the chat pair's ``id``).
    """

    messages: tuple[tuple[str, str], ...]
    response: str | None
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    ts: datetime | None = None
    cost_usd: float | None = None
    batch: bool = False
    source: str = ""
    id: str | None = None

    @property
    def system(self) -> str:
        """The system (and developer) messages, joined by newlines."""
        return "\n".join(t for r, t in self.messages if r in ("system", "developer"))

    @property
    def text(self) -> str:
        """The last user message: what the gateway takes as a task's input text."""
        for role, t in reversed(self.messages):
            if role == "user":
                return t
        return ""


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that could not be read, and why."""

    line: int
    reason: str


@dataclass
class FileReport:
    """What reading one file gave: counts, bad lines (the first ``max_listed``) and notes."""

    path: str
    format: str
    lines: int = 0
    records: int = 0
    bad_count: int = 0
    bad: list[BadLine] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    max_listed: int = 20
    unit: str = "line"  # "item" for a JSON array

    def add_bad(self, line: int, reason: str) -> None:
        self.bad_count += 1
        if len(self.bad) < self.max_listed:
            self.bad.append(BadLine(line, reason))

    def skip(self, why: str, n: int = 1) -> None:
        """Count a valid row that gives no usable record (failed request, no stored text...)."""
        self.skipped[why] = self.skipped.get(why, 0) + n

    def summary(self) -> str:
        parts = [f"{self.path} ({self.format}): {self.lines:,} {self.unit}s, {self.records:,} records"]
        if self.bad_count:
            listed = "; ".join(f"{self.unit} {b.line}: {b.reason}" for b in self.bad)
            more = f"; and {self.bad_count - len(self.bad):,} more" if self.bad_count > len(self.bad) else ""
            parts.append(f"{self.bad_count:,} bad ({listed}{more})")
        for why, n in self.skipped.items():
            parts.append(f"{n:,} skipped: {why}")
        return ", ".join(parts) + "".join(f"\n  note: {n}" for n in self.notes)


@dataclass
class ReadReport:
    """The reports of every file read."""

    files: list[FileReport] = field(default_factory=list)

    @property
    def bad_count(self) -> int:
        return sum(f.bad_count for f in self.files)

    @property
    def records(self) -> int:
        return sum(f.records for f in self.files)

    def summary(self) -> str:
        return "\n".join(f.summary() for f in self.files)


@dataclass
class LogRead:
    """The records read from some logs and the report of reading them."""

    records: list[LogRecord]
    report: ReadReport
