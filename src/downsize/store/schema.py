"""The store's tables: everything downsize records, as SQLAlchemy ORM rows.

Rows are only ever added, never silently overwritten: a new label for an example is a new row
(the effective label is chosen by source priority, gold > human > teacher, then recency), a
retrained student is a new version, and a teacher call is recorded once under its content hash.
The two marks set on an existing row are ``revoked_at`` (an API key, or a reviewer's label that
the reviewer undid): the row stays, and is no longer in effect.
Answer columns (``labels.label``, ``teacher_calls.parsed_label``, the audit log's answers) hold
the task kind's *encoded* answer (:meth:`downsize.tasks.TaskConfig.encode`): a label for
``classify``, JSON for the structured kinds.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ApiKey",
    "Base",
    "CalibrationRun",
    "CallClaim",
    "EvalRun",
    "Example",
    "LABEL_ORIGINS",
    "LABEL_SOURCES",
    "Label",
    "MonitorCheckpoint",
    "RequestLog",
    "Review",
    "ReviewCursor",
    "ReviewItem",
    "ReviewReason",
    "SpendLedger",
    "SpotCheck",
    "StudentVersion",
    "TaskEvent",
    "TeacherCall",
    "dumps",
    "text_hash",
    "utcnow",
]

#: Label sources, lowest priority first: human corrections override the teacher, gold wins.
#: ``synthetic``: a text the teacher wrote for a label (``downsize synth``; trained on with the
#: task's ``synthetic_weight``, never calibrated on); ``audit``: a logged teacher answer imported
#: from traffic logs (``downsize audit import``; no teacher call).
LABEL_SOURCES = ("synthetic", "audit", "teacher", "human", "gold")
#: How the gateway came by a teacher label (``Label.origin``), and so how its text was selected:
#: ``shadow`` every request of a task in shadow mode or suspended (a uniform sample of traffic),
#: ``spot_check`` a uniform sample of the *answered* requests, ``escalation`` the requests the
#: student was unsure of (selected by low confidence). None: a file (``label``, ``add-labels``).
LABEL_ORIGINS = ("shadow", "spot_check", "escalation")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def text_hash(text: str) -> str:
    """sha256 of the UTF-8 text: the identity of an example (and the audit log's input hash)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Base(DeclarativeBase):
    pass


class Example(Base):
    """One input text of a task (unlabelled until a Label row points at it)."""

    __tablename__ = "examples"
    __table_args__ = (UniqueConstraint("task", "text_hash", name="uq_example_task_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task: Mapped[str] = mapped_column(String(64), index=True)
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class TeacherCall(Base):
    """One paid request to a teacher, keyed by the hash of everything that determines it."""

    __tablename__ = "teacher_calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64), unique=True)
    base_url: Mapped[str] = mapped_column(String(512))
    model: Mapped[str] = mapped_column(String(255))
    task: Mapped[str | None] = mapped_column(String(64), index=True, nullable=True)
    prompt: Mapped[Any] = mapped_column(JSON)  # the messages sent
    schema_json: Mapped[Any] = mapped_column(JSON, nullable=True)
    raw_response: Mapped[str | None] = mapped_column(Text, nullable=True)
    parsed_label: Mapped[str | None] = mapped_column(Text, nullable=True)  # the encoded answer
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(32))  # ok | parse_error
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    # set on a call paid again for a request already recorded (a lease lost to another process):
    # the row keeps the money on the books under a derived hash; the cache answers from the first
    repeat_of: Mapped[str | None] = mapped_column(String(64), nullable=True)


class CallClaim(Base):
    """A paid call being made: claimed before it is sent, deleted when it is recorded or given up.

    ``request_hash`` is unique, so one process (``owner``: host, pid and a token) holds a request
    at a time; the others wait for its :class:`TeacherCall` or skip it. The claim is a lease: once
    ``lease_until`` has passed, or when its owner is a process of this host that no longer exists,
    another process may take it over (and counts the call as possibly paid twice).
    ``reserved_usd`` is the call's worst-case cost, held against every process's budget meanwhile.
    """

    __tablename__ = "teacher_call_claims"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    owner: Mapped[str] = mapped_column(String(255))
    lease_until: Mapped[datetime] = mapped_column(DateTime)
    reserved_usd: Mapped[float] = mapped_column(Float, default=0.0)
    task: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class SpendLedger(Base):
    """The store's spend ledger: one row that every claim updates first.

    The update serialises claims and budget checks across processes (a write lock on SQLite, a
    row lock on PostgreSQL) so that "spent + reserved + this call ≤ budget" is checked and the
    claim made atomically. What was spent is the sum of :class:`TeacherCall` costs; what is
    reserved, the sum of the live :class:`CallClaim` rows. ``claims`` and ``reclaimed`` count the
    claims made and the expired or orphaned ones taken over.
    """

    __tablename__ = "spend_ledger"

    id: Mapped[int] = mapped_column(primary_key=True)
    claims: Mapped[int] = mapped_column(Integer, default=0)
    reclaimed: Mapped[int] = mapped_column(Integer, default=0)


class Label(Base):
    """A label for an example from the teacher, a human correction, or gold."""

    __tablename__ = "labels"
    __table_args__ = (Index("ix_labels_task_example", "task", "example_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    example_id: Mapped[int] = mapped_column(ForeignKey("examples.id"))
    task: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(Text)  # the task kind's encoded answer
    source: Mapped[str] = mapped_column(String(16))  # synthetic | audit | teacher | human | gold
    teacher_call_id: Mapped[int | None] = mapped_column(ForeignKey("teacher_calls.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # set when the review that wrote this label was undone: the row stays, no longer in effect
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # shadow | spot_check | escalation (LABEL_ORIGINS) for labels the gateway saw; None: from a file
    origin: Mapped[str | None] = mapped_column(String(16), nullable=True)


class StudentVersion(Base):
    """A trained student on disk (path + sha256) and how it was trained."""

    __tablename__ = "student_versions"
    __table_args__ = (UniqueConstraint("task", "version", name="uq_student_task_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    labels: Mapped[Any] = mapped_column(JSON)
    n_train: Mapped[int] = mapped_column(Integer)
    n_calib: Mapped[int] = mapped_column(Integer)
    calib_example_ids: Mapped[Any] = mapped_column(JSON)  # held-out split used by calibrate
    train_seconds: Mapped[float] = mapped_column(Float)
    metrics: Mapped[Any] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class CalibrationRun(Base):
    """One threshold calibration: the guarantee and what it buys."""

    __tablename__ = "calibration_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    task: Mapped[str] = mapped_column(String(64), index=True)
    student_version_id: Mapped[int] = mapped_column(ForeignKey("student_versions.id"))
    alpha: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: teacher only
    coverage: Mapped[float] = mapped_column(Float)
    coverage_lo: Mapped[float] = mapped_column(Float)
    coverage_hi: Mapped[float] = mapped_column(Float)
    n_calib: Mapped[int] = mapped_column(Integer)
    n_answered: Mapped[int] = mapped_column(Integer)
    errors_answered: Mapped[int] = mapped_column(Integer)
    reference: Mapped[str] = mapped_column(String(32))  # teacher | gold | mixed
    method: Mapped[str] = mapped_column(String(64))
    details: Mapped[Any] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class EvalRun(Base):
    """``downsize eval`` results against gold."""

    __tablename__ = "eval_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    task: Mapped[str] = mapped_column(String(64), index=True)
    student_version_id: Mapped[int | None] = mapped_column(ForeignKey("student_versions.id"))
    calibration_run_id: Mapped[int | None] = mapped_column(ForeignKey("calibration_runs.id"))
    data_path: Mapped[str] = mapped_column(String(1024))
    n: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[Any] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class RequestLog(Base):
    """The audit log: one row per answered request (gateway or batch cascade)."""

    __tablename__ = "request_log"
    __table_args__ = (Index("ix_request_log_task_ts", "task", "ts"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    ts: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    channel: Mapped[str] = mapped_column(String(16), default="gateway")  # gateway | batch
    task: Mapped[str | None] = mapped_column(String(64), nullable=True)  # None: pass-through
    model: Mapped[str] = mapped_column(String(255))
    input_hash: Mapped[str] = mapped_column(String(64))
    input_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    # student | teacher | student_fallback | shadow | passthrough | error
    answered_by: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(255), default="")
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    student_version_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    student_label: Mapped[str | None] = mapped_column(Text, nullable=True)
    teacher_label: Mapped[str | None] = mapped_column(Text, nullable=True)
    teacher_input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    teacher_output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    teacher_cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    # what the teacher would have cost for this request (recorded or estimated tokens x price)
    teacher_only_cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float] = mapped_column(Float)
    student_latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    teacher_latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    student_cpu_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    client_key_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status_code: Mapped[int] = mapped_column(Integer, default=200)


class SpotCheck(Base):
    """A student answer re-asked of the teacher in the background: the live guarantee check."""

    __tablename__ = "spot_checks"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), index=True)
    task: Mapped[str] = mapped_column(String(64), index=True)
    ts: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    student_version_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    student_label: Mapped[str] = mapped_column(Text)
    teacher_label: Mapped[str | None] = mapped_column(Text, nullable=True)
    agree: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # None: teacher failed
    # the task kind's loss of the student's answer against the teacher's, in [0, 1] (None: teacher failed)
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    teacher_cost_usd: Mapped[float] = mapped_column(Float, default=0.0)


class ApiKey(Base):
    """A gateway API key: only its sha256 is kept."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    key_id: Mapped[str] = mapped_column(String(64), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ReviewItem(Base):
    """A text in a task's review queue (one per task and text hash; why it is there: its reasons)."""

    __tablename__ = "review_items"
    __table_args__ = (UniqueConstraint("task", "text_hash", name="uq_review_item_task_hash"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task: Mapped[str] = mapped_column(String(64), index=True)
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ReviewReason(Base):
    """Why an item is in the queue: one row per source row and reason (an item may have several).

    ``source``/``source_ref`` name the row it came from (``request_log``/request id,
    ``spot_checks``/request id, ``teacher_calls``/call id, ``user``/file:line); the answers are the
    task kind's encoded answers as that row recorded them; ``ts`` is that row's time.
    """

    __tablename__ = "review_reasons"
    __table_args__ = (UniqueConstraint("item_id", "reason", "source_ref", name="uq_review_reason"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id"), index=True)
    task: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(String(32))  # sample | disagreement | user | contradicted | fallback | teacher_failed
    priority: Mapped[float] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(String(255), default="")
    source: Mapped[str] = mapped_column(String(32))
    source_ref: Mapped[str] = mapped_column(String(255))
    ts: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    answered_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    served_answer: Mapped[str | None] = mapped_column(Text, nullable=True)  # what the request got
    student_answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    student_confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    teacher_answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Review(Base):
    """A person's answer to an item (``label_id``: the ``human`` label it wrote) or a skip.

    Never overwritten: a second reviewer's answer is a new row (both kept; the newer label is in
    effect); an undo sets ``undone_at`` here and ``revoked_at`` on the label.
    """

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("review_items.id"), index=True)
    task: Mapped[str] = mapped_column(String(64), index=True)
    reviewer: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(16))  # teacher | student | pick | edit | import | skip
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)  # the task kind's encoded answer
    label_id: Mapped[int | None] = mapped_column(ForeignKey("labels.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    undone_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class ReviewCursor(Base):
    """How far the queue has read one audit table for one task (the last id seen)."""

    __tablename__ = "review_cursors"
    __table_args__ = (UniqueConstraint("task", "source", name="uq_review_cursor"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(32))
    last_id: Mapped[int] = mapped_column(Integer, default=0)


class TaskEvent(Base):
    """Something that happened to a task's life: suspended, resumed, a version promoted or rolled
    back, a gate that refused a candidate, a drift warning, a retrain that failed.

    *State* events (``suspended``, ``resumed``, ``promoted``, ``rolled_back``) form one chain per
    task: each names the state event before it in ``parent_id`` (0 for the first), and
    ``(task, parent_id)`` is unique, so two processes that change a task at once cannot both
    succeed (the second gets an IntegrityError and re-reads). Each state event names the live
    student version and calibration run after it, and ``spot_id_start``/``request_id_start``: the
    last spot-check and audit-log ids when it was written (a fresh monitor reads only rows after
    them). Other events have ``parent_id`` None; ``dedupe`` (unique per task) makes a repeated
    event (the same warning seen by two workers) one row.
    """

    __tablename__ = "task_events"
    __table_args__ = (UniqueConstraint("task", "parent_id", name="uq_task_event_parent"),
                      UniqueConstraint("task", "dedupe", name="uq_task_event_dedupe"))

    id: Mapped[int] = mapped_column(primary_key=True)
    task: Mapped[str] = mapped_column(String(64), index=True)
    ts: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    parent_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    dedupe: Mapped[str | None] = mapped_column(String(128), nullable=True)
    student_version_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    calibration_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    spot_id_start: Mapped[int] = mapped_column(Integer, default=0)
    request_id_start: Mapped[int] = mapped_column(Integer, default=0)
    actor: Mapped[str] = mapped_column(String(64), default="")  # cli | gateway:<pid> | python
    message: Mapped[str] = mapped_column(Text, default="")
    details: Mapped[Any] = mapped_column(JSON, default=dict)


class MonitorCheckpoint(Base):
    """A live monitor's saved state (``RiskMonitor``/``DriftMonitor.to_dict``) after the rows up to
    ``last_id`` (spot checks or audit-log rows) of one monitor epoch.

    The one table whose rows are updated in place: a checkpoint is a cache of a deterministic
    function of rows that are themselves never changed (the monitor fed, in store-id order, the
    epoch's rows), so it can always be rebuilt; it is only ever moved forward (``last_id`` grows).
    """

    __tablename__ = "monitor_checkpoints"
    __table_args__ = (UniqueConstraint("task", "epoch", "monitor", name="uq_monitor_checkpoint"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task: Mapped[str] = mapped_column(String(64))
    epoch: Mapped[str] = mapped_column(String(64))  # which monitor: see downsize.lifecycle
    monitor: Mapped[str] = mapped_column(String(16))  # risk | drift
    last_id: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[Any] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


def dumps(obj: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): the basis of content hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
