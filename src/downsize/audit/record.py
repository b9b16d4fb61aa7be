"""Typed audit records: one :class:`AuditRecord` per answered (or refused) request, one
:class:`SpotCheckRecord` per spot check, built by keyword for both channels (the batch cascade of
``downsize predict`` and the gateway) and written by :class:`~downsize.audit.AuditWriter`.

:class:`AuditRecord`'s fields are exactly the :class:`~downsize.store.RequestLog` columns (but the
database's ``id``): a test pins that, so a new column cannot be forgotten on either side. Answers
are stored in the task kind's text form (:meth:`~downsize.tasks.TaskConfig.encode`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from ..cascade import AnsweredBy, Decision
from ..config import TeacherConfig
from ..store import RequestLog, text_hash, utcnow
from ..tasks import TaskConfig

__all__ = ["LOG_COLUMNS", "AuditRecord", "SpotCheckRecord", "ShadowLabel", "decision_records", "teacher_only_cost"]

#: Columns of an audit-log row, in table order (``log export`` writes them in this order).
LOG_COLUMNS: tuple[str, ...] = tuple(c.name for c in RequestLog.__table__.columns)
_REASON_MAX = 255


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, kw_only=True, slots=True)
class AuditRecord:
    """One row of the audit log (see the module docstring)."""

    model: str
    input_hash: str
    answered_by: AnsweredBy
    latency_ms: float
    request_id: str = field(default_factory=_new_id)
    ts: datetime = field(default_factory=utcnow)
    channel: str = "gateway"  # gateway | batch
    task: str | None = None  # None: pass-through
    input_text: str | None = None
    answer: str | None = None
    reason: str = ""
    confidence: float | None = None
    threshold: float | None = None
    student_version_id: int | None = None
    student_label: str | None = None
    teacher_label: str | None = None
    teacher_input_tokens: int = 0
    teacher_output_tokens: int = 0
    teacher_cost_usd: float = 0.0
    teacher_only_cost_usd: float = 0.0
    student_latency_ms: float | None = None
    teacher_latency_ms: float | None = None
    student_cpu_ms: float | None = None
    client_key_id: str | None = None
    status_code: int = 200

    def __post_init__(self) -> None:
        if len(self.reason) > _REASON_MAX:
            object.__setattr__(self, "reason", self.reason[: _REASON_MAX - 3] + "...")
        object.__setattr__(self, "answered_by", AnsweredBy(self.answered_by))

    def row(self) -> dict[str, Any]:
        """The record as ``request_log`` column values."""
        out = asdict(self)
        out["answered_by"] = self.answered_by.value
        return out


@dataclass(frozen=True, kw_only=True, slots=True)
class SpotCheckRecord:
    """One :class:`~downsize.store.SpotCheck` row: a student answer re-asked of the teacher.

    ``loss`` is the kind's loss of the student's answer against the teacher's (None when the
    teacher failed: such a check counts neither as an agreement nor as a disagreement).
    """

    request_id: str
    task: str
    student_label: str
    teacher_label: str | None
    loss: float | None
    student_version_id: int | None = None
    teacher_cost_usd: float = 0.0
    ts: datetime = field(default_factory=utcnow)

    @property
    def agree(self) -> bool | None:
        return None if self.loss is None else self.loss == 0.0

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        out["agree"] = self.agree
        return out


class ShadowLabel(NamedTuple):
    """A teacher answer the gateway saw (in shadow mode, a spot check or an escalation), to be
    stored as a ``teacher`` label with its ``origin`` (how the text was selected)."""

    task: str
    text: str
    label: str  #: the kind's encoded answer
    teacher_call_id: int | None
    origin: str = "shadow"  #: shadow | spot_check | escalation (``downsize.store.LABEL_ORIGINS``)


def teacher_only_cost(tcfg: TeacherConfig, d: Decision, tokens: tuple[float, float]) -> float:
    """What the teacher would have cost for this request: its recorded tokens, else the task average."""
    if d.teacher_input_tokens or d.teacher_output_tokens:
        return tcfg.cost(d.teacher_input_tokens, d.teacher_output_tokens)
    return tcfg.cost(int(round(tokens[0])), int(round(tokens[1])))


def _enc(task: TaskConfig, answer: Any) -> str | None:
    return None if answer is None else task.encode(answer)


def decision_records(task_name: str, task: TaskConfig, texts: Sequence[str], decisions: Sequence[Decision], *,
                     tcfg: TeacherConfig, tokens: tuple[float, float], channel: str,
                     threshold: float | None, student_version_id: int | None,
                     request_ids: Sequence[str] | None = None, client_key_id: str | None = None,
                     status_code: int = 200, redact: Any = None) -> list[AuditRecord]:
    """Audit records for cascade decisions, one per text.

    ``tokens`` is the task's average (input, output) teacher tokens, for the teacher-only cost of
    requests the teacher did not see; ``redact`` (a ``str -> str``) cleans the reason.
    """
    now = utcnow()
    out = []
    for i, (x, d) in enumerate(zip(texts, decisions, strict=True)):
        out.append(AuditRecord(
            request_id=request_ids[i] if request_ids is not None else _new_id(), ts=now, channel=channel,
            task=task_name, model=f"downsize/{task_name}", input_hash=text_hash(x),
            input_text=x if task.log_text else None, answer=_enc(task, d.answer), answered_by=d.answered_by,
            reason=redact(d.reason) if redact else d.reason, confidence=d.confidence, threshold=threshold,
            student_version_id=student_version_id, student_label=_enc(task, d.student_answer),
            teacher_label=_enc(task, d.teacher_answer), teacher_input_tokens=d.teacher_input_tokens,
            teacher_output_tokens=d.teacher_output_tokens, teacher_cost_usd=d.teacher_cost_usd,
            teacher_only_cost_usd=teacher_only_cost(tcfg, d, tokens), latency_ms=d.latency_ms,
            student_latency_ms=d.student_latency_ms, teacher_latency_ms=d.teacher_latency_ms,
            student_cpu_ms=d.student_cpu_ms, client_key_id=client_key_id, status_code=status_code,
        ))
    return out

