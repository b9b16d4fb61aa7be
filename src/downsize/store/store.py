"""The :class:`Store`: the project's one database (SQLite by default, any SQLAlchemy URL)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, func, inspect, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ..errors import StoreError
from .claims import ClaimsMixin
from .schema import (
    LABEL_ORIGINS,
    LABEL_SOURCES,
    Base,
    CalibrationRun,
    Example,
    Label,
    RequestLog,
    SpendLedger,
    SpotCheck,
    StudentVersion,
    TeacherCall,
    text_hash,
)

__all__ = ["LabelledExample", "Store", "make_engine"]


def _create_private(path: Path) -> None:
    """Create the SQLite file ``path`` readable by its owner only (0600), if it does not exist.

    The store holds request texts and answers, so it must not be world-readable; SQLite would
    create it with the umask's mode (usually 0644). Its ``-wal`` and ``-shm`` files take the
    database file's mode. An existing file keeps its mode (the owner may have chosen it).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout, its directory created and a new
    database file created 0600."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        path = Path(url[len("sqlite:///") :].split("?", 1)[0])
        path.parent.mkdir(parents=True, exist_ok=True)
        _create_private(path)
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


def _add_missing_columns(engine: Engine) -> None:
    """Add the columns a newer downsize defines to the tables of an older store.

    ``create_all`` creates missing tables but never alters existing ones. New columns are always
    nullable (or defaulted in Python), so ``ALTER TABLE ... ADD COLUMN`` upgrades a store in place
    on SQLite and PostgreSQL alike; nothing is ever dropped or rewritten. (A full migration tool
    such as Alembic would be the next step if a change ever needs more than new columns.)
    """
    insp = inspect(engine)
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            have = {c["name"] for c in insp.get_columns(table.name)}
            for col in table.columns:
                if col.name not in have:
                    kind = col.type.compile(dialect=engine.dialect)
                    conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN "{col.name}" {kind}')


@dataclass(frozen=True)
class LabelledExample:
    """An example with its effective label (the highest-priority, newest label)."""

    example_id: int
    text: str
    label: str
    source: str


class Store(ClaimsMixin):
    """The project's database. Schema is created on first use.

    Paid teacher calls are claimed before they are sent and recorded once (see
    :mod:`.claims`: nothing is paid twice across processes; the budget is the store's ledger).

    Parameters
    ----------
    url : str
        SQLAlchemy URL, e.g. ``sqlite:///.downsize/downsize.db``.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.engine = make_engine(url)
            for attempt in range(5):  # two processes creating one new store at once: one wins
                try:
                    Base.metadata.create_all(self.engine)
                    _add_missing_columns(self.engine)
                    break
                except SQLAlchemyError:
                    if attempt == 4:
                        raise
                    time.sleep(0.05 * (attempt + 1))
            self._sessions = sessionmaker(self.engine, expire_on_commit=False)
            self.ensure_ledger()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open the store at {url}: {exc}") from exc

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
        """Insert texts not yet known for ``task``; return the example id of every text, in order.

        Two processes adding the same texts at once: the one whose insert loses on the unique
        (task, text hash) reads the winner's ids and tries again.
        """
        texts = list(texts)
        for attempt in range(5):
            try:
                return self._add_examples(task, texts, source)
            except IntegrityError:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _add_examples(self, task: str, texts: list[str], source: str) -> list[int]:
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
        origin: str | None = None,
        unless_labelled: bool = False,
    ) -> int:
        """Append labels ``(example_id, label)`` from ``source``; returns how many were added.

        ``origin`` (one of ``LABEL_ORIGINS``) says how the gateway selected the text, for labels it saw.
        ``unless_labelled``: leave out the examples that already have a label from ``source``
        (another run's, say), checked and written in one transaction under the store's write lock.
        """
        if source not in LABEL_SOURCES:
            raise ValueError(f"source must be one of {LABEL_SOURCES}, got {source!r}")
        if origin is not None and origin not in LABEL_ORIGINS:
            raise ValueError(f"origin must be None or one of {LABEL_ORIGINS}, got {origin!r}")
        items = list(items)
        calls = list(teacher_call_ids) if teacher_call_ids is not None else [None] * len(items)
        with self.session() as s:
            if unless_labelled and items:
                # a no-op write to the ledger row first: it takes the store's write lock (a row lock
                # on PostgreSQL), so two runs' check-then-insert cannot interleave
                s.execute(update(SpendLedger).where(SpendLedger.id == 1).values(claims=SpendLedger.claims))
                wanted = list(dict.fromkeys(eid for eid, _ in items))
                have: set[int] = set()
                for i in range(0, len(wanted), 500):
                    have.update(s.scalars(select(Label.example_id).where(
                        Label.task == task, Label.source == source, Label.example_id.in_(wanted[i : i + 500]))))
                keep = [k for k, (eid, _) in enumerate(items) if eid not in have]
                items, calls = [items[k] for k in keep], [calls[k] for k in keep]
            s.add_all(
                Label(example_id=eid, task=task, label=lab, source=source, teacher_call_id=cid, origin=origin)
                for (eid, lab), cid in zip(items, calls)
            )
        return len(items)

    def labelled_examples(self, task: str, *, sources: Sequence[str] = LABEL_SOURCES) -> list[LabelledExample]:
        """Every labelled example of ``task`` with its effective label (gold > human > teacher, newest;
        revoked labels are not in effect)."""
        prio = {s: i for i, s in enumerate(LABEL_SOURCES)}
        best: dict[int, tuple[int, int, str, str]] = {}
        with self.session() as s:
            rows = s.execute(
                select(Label.example_id, Label.id, Label.label, Label.source).where(
                    Label.task == task, Label.source.in_(list(sources)), Label.revoked_at.is_(None)
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
    def recorded_hashes(self, request_hashes: Iterable[str]) -> set[str]:
        """Which of ``request_hashes`` are recorded calls (one query per 500: a bulk cache check)."""
        wanted = list(dict.fromkeys(request_hashes))
        found: set[str] = set()
        with self.session() as s:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                found.update(s.scalars(select(TeacherCall.request_hash).where(TeacherCall.request_hash.in_(chunk))))
        return found

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
