"""The store: everything downsize records, in one SQLAlchemy database (SQLite by default).

Rows are only ever added, never silently overwritten: a new label for an example is a
new row (the effective label is chosen by source priority, gold > human > teacher, then
recency), a retrained student is a new version, and a teacher call is recorded once
under its content hash so that nothing paid for is paid for twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
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
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from .errors import StoreError

__all__ = [
    "Store",
    "Base",
    "Example",
    "TeacherCall",
    "Label",
    "StudentVersion",
    "CalibrationRun",
    "EvalRun",
    "RequestLog",
    "SpotCheck",
    "ApiKey",
    "make_engine",
    "text_hash",
    "utcnow",
    "LABEL_SOURCES",
]

#: Label sources, lowest priority first: human corrections override the teacher, gold wins.
LABEL_SOURCES = ("teacher", "human", "gold")


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


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
    parsed_label: Mapped[str | None] = mapped_column(String(255), nullable=True)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[str] = mapped_column(String(32))  # ok | parse_error
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class Label(Base):
    """A label for an example from the teacher, a human correction, or gold."""

    __tablename__ = "labels"
    __table_args__ = (Index("ix_labels_task_example", "task", "example_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    example_id: Mapped[int] = mapped_column(ForeignKey("examples.id"))
    task: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16))  # teacher | human | gold
    teacher_call_id: Mapped[int | None] = mapped_column(ForeignKey("teacher_calls.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


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
    student_label: Mapped[str | None] = mapped_column(String(255), nullable=True)
    teacher_label: Mapped[str | None] = mapped_column(String(255), nullable=True)
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
    student_label: Mapped[str] = mapped_column(String(255))
    teacher_label: Mapped[str | None] = mapped_column(String(255), nullable=True)
    agree: Mapped[bool | None] = mapped_column(Boolean, nullable=True)  # None: teacher failed
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


# ---------------------------------------------------------------------------------
def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout and its directory created."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        path = Path(url[len("sqlite:///") :])
        path.parent.mkdir(parents=True, exist_ok=True)
    is_sqlite = url.startswith("sqlite")
    kwargs: dict[str, Any] = {}
    if is_sqlite:
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = create_engine(url, **kwargs)
    if is_sqlite:

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            if url not in ("sqlite://", "sqlite:///:memory:"):
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


@dataclass(frozen=True)
class LabelledExample:
    """An example with its effective label (the highest-priority, newest label)."""

    example_id: int
    text: str
    label: str
    source: str


class Store:
    """The project's database. Schema is created on first use.

    Parameters
    ----------
    url : str
        SQLAlchemy URL, e.g. ``sqlite:///.downsize/downsize.db``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = make_engine(url)
            Base.metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the store at {url}: {exc}") from exc
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        s = self._sessions()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    # -- examples and labels ----------------------------------------------------------
    def add_examples(self, task: str, texts: Iterable[str], *, source: str = "") -> list[int]:
        """Insert texts not yet known for ``task``; return the example id of every text, in order."""
        texts = list(texts)
        hashes = [text_hash(t) for t in texts]
        with self.session() as s:
            known: dict[str, int] = {}
            uniq = list(dict.fromkeys(hashes))
            for i in range(0, len(uniq), 500):
                chunk = uniq[i : i + 500]
                rows = s.execute(
                    select(Example.text_hash, Example.id).where(
                        Example.task == task, Example.text_hash.in_(chunk)
                    )
                )
                known.update({h: i_ for h, i_ in rows})
            new = []
            for t, h in zip(texts, hashes):
                if h not in known:
                    ex = Example(task=task, text=t, text_hash=h, source=source)
                    known[h] = -1
                    new.append((h, ex))
            s.add_all([ex for _, ex in new])
            s.flush()
            for h, ex in new:
                known[h] = ex.id
        return [known[h] for h in hashes]

    def add_labels(
        self,
        task: str,
        items: Iterable[tuple[int, str]],
        *,
        source: str,
        teacher_call_ids: Sequence[int | None] | None = None,
    ) -> int:
        """Append labels ``(example_id, label)`` from ``source``; returns how many were added."""
        if source not in LABEL_SOURCES:
            raise ValueError(f"source must be one of {LABEL_SOURCES}, got {source!r}")
        items = list(items)
        calls = list(teacher_call_ids) if teacher_call_ids is not None else [None] * len(items)
        with self.session() as s:
            s.add_all(
                Label(example_id=eid, task=task, label=lab, source=source, teacher_call_id=cid)
                for (eid, lab), cid in zip(items, calls)
            )
        return len(items)

    def labelled_examples(self, task: str, *, sources: Sequence[str] = LABEL_SOURCES) -> list[LabelledExample]:
        """Every labelled example of ``task`` with its effective label (gold > human > teacher, newest)."""
        prio = {s: i for i, s in enumerate(LABEL_SOURCES)}
        best: dict[int, tuple[int, int, str, str]] = {}
        with self.session() as s:
            rows = s.execute(
                select(Label.example_id, Label.id, Label.label, Label.source).where(
                    Label.task == task, Label.source.in_(list(sources))
                )
            )
            for eid, lid, lab, src in rows:
                key = (prio[src], lid)
                cur = best.get(eid)
                if cur is None or key > cur[:2]:
                    best[eid] = (prio[src], lid, lab, src)
            texts = {}
            ids = list(best)
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                texts.update({i_: t for i_, t in s.execute(select(Example.id, Example.text).where(Example.id.in_(chunk)))})
        return [
            LabelledExample(eid, texts[eid], v[2], v[3]) for eid, v in sorted(best.items())
        ]

    def labelled_hashes(self, task: str, *, source: str = "teacher") -> set[str]:
        """Text hashes of ``task`` examples that already have a label from ``source``."""
        with self.session() as s:
            rows = s.execute(
                select(Example.text_hash)
                .join(Label, Label.example_id == Example.id)
                .where(Example.task == task, Label.source == source)
            )
            return {h for (h,) in rows}

    # -- teacher calls (the content-addressed cache) ------------------------------------
    def cached_call(self, request_hash: str) -> TeacherCall | None:
        with self.session() as s:
            return s.scalar(select(TeacherCall).where(TeacherCall.request_hash == request_hash))

    def recorded_hashes(self, request_hashes: Iterable[str]) -> set[str]:
        """Which of ``request_hashes`` are recorded calls (one query per 500: a bulk cache check)."""
        wanted = list(dict.fromkeys(request_hashes))
        found: set[str] = set()
        with self.session() as s:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                found.update(s.scalars(select(TeacherCall.request_hash).where(TeacherCall.request_hash.in_(chunk))))
        return found

    def record_call(self, call: TeacherCall) -> TeacherCall:
        """Record a paid call once. If the same request was recorded meanwhile, return that row."""
        try:
            with self.session() as s:
                s.add(call)
            return call
        except IntegrityError:
            existing = self.cached_call(call.request_hash)
            if existing is None:  # pragma: no cover - only on a broken database
                raise StoreError(f"could not record teacher call {call.request_hash}") from None
            return existing

    def teacher_spend(self, *, task: str | None = None) -> float:
        with self.session() as s:
            q = select(func.coalesce(func.sum(TeacherCall.cost_usd), 0.0))
            if task is not None:
                q = q.where(TeacherCall.task == task)
            return float(s.scalar(q) or 0.0)

    # -- students and calibration ---------------------------------------------------------
    def next_student_version(self, task: str) -> int:
        with self.session() as s:
            v = s.scalar(select(func.max(StudentVersion.version)).where(StudentVersion.task == task))
        return int(v or 0) + 1

    def add(self, row: Base) -> Base:
        """Insert one row and return it with its id."""
        with self.session() as s:
            s.add(row)
        return row

    def latest_student(self, task: str) -> StudentVersion | None:
        with self.session() as s:
            return s.scalar(
                select(StudentVersion)
                .where(StudentVersion.task == task)
                .order_by(StudentVersion.version.desc())
                .limit(1)
            )

    def student(self, student_version_id: int) -> StudentVersion | None:
        with self.session() as s:
            return s.get(StudentVersion, student_version_id)

    def latest_calibration(self, task: str, *, student_version_id: int | None = None) -> CalibrationRun | None:
        with self.session() as s:
            q = select(CalibrationRun).where(CalibrationRun.task == task)
            if student_version_id is not None:
                q = q.where(CalibrationRun.student_version_id == student_version_id)
            return s.scalar(q.order_by(CalibrationRun.id.desc()).limit(1))

    # -- audit log --------------------------------------------------------------------------
    def log_requests(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert audit-log rows in one transaction (the gateway batches them off the hot path)."""
        if not rows:
            return 0
        with self.session() as s:
            s.execute(RequestLog.__table__.insert(), list(rows))
        return len(rows)

    def add_spot_checks(self, rows: Sequence[dict[str, Any]]) -> int:
        """Insert spot-check rows (dicts of :class:`SpotCheck` columns) in one transaction."""
        if not rows:
            return 0
        with self.session() as s:
            s.execute(SpotCheck.__table__.insert(), list(rows))
        return len(rows)

    def ping(self) -> None:
        """Raise :class:`StoreError` unless the database answers a trivial query."""
        from sqlalchemy import text

        try:
            with self.session() as s:
                s.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            raise StoreError(f"the store at {self.url} does not answer: {exc}") from exc


def dumps(obj: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): the basis of content hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
