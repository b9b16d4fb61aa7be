"""The audit log: one :class:`~downsize.store.RequestLog` row per answered request.

Rows are built here for both channels (the batch cascade of ``downsize predict`` and the
gateway) and written by :class:`AuditWriter`, a background thread that drains a queue into
the store in batches, so the gateway never waits on the database. The writer also records
the gateway's other side products (spot checks, shadow-mode teacher labels). Reading the
log back (``downsize log tail`` / ``log export``) is here too.

Layering: ``cascade`` → ``audit`` → ``server`` / ``project``; nothing here imports fastapi.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from .cascade import Cascade, Decision
from .config import TeacherConfig
from .errors import DataError
from .store import RequestLog, Store, text_hash, utcnow

__all__ = [
    "AuditWriter",
    "LOG_COLUMNS",
    "audit_rows",
    "request_row",
    "teacher_only_cost",
    "read_log",
    "export_log",
    "parse_since",
]

log = logging.getLogger("downsize.audit")

#: Columns of an audit-log row, in table order (``log export`` writes them in this order).
LOG_COLUMNS: tuple[str, ...] = tuple(c.name for c in RequestLog.__table__.columns)
_ROW_DEFAULTS: dict[str, Any] = {
    "channel": "gateway", "task": None, "input_text": None, "answer": None, "reason": "",
    "confidence": None, "threshold": None, "student_version_id": None, "student_label": None,
    "teacher_label": None, "teacher_input_tokens": 0, "teacher_output_tokens": 0,
    "teacher_cost_usd": 0.0, "teacher_only_cost_usd": 0.0, "student_latency_ms": None,
    "teacher_latency_ms": None, "student_cpu_ms": None, "client_key_id": None, "status_code": 200,
}


# ---------------------------------------------------------------------------------
# building rows
# ---------------------------------------------------------------------------------
def teacher_only_cost(tcfg: TeacherConfig, d: Decision, tokens: tuple[float, float]) -> float:
    """What the teacher would have cost for this request: its recorded tokens, else the task average."""
    if d.teacher_input_tokens or d.teacher_output_tokens:
        return tcfg.cost(d.teacher_input_tokens, d.teacher_output_tokens)
    return tcfg.cost(int(round(tokens[0])), int(round(tokens[1])))


def request_row(*, model: str, input_hash: str, answered_by: str, latency_ms: float,
                request_id: str | None = None, ts: datetime | None = None, **fields: Any) -> dict[str, Any]:
    """One audit-log row with every column filled (defaults for the ones not given).

    Raises
    ------
    TypeError
        For a keyword that is not a column of ``request_log``.
    """
    unknown = set(fields) - set(_ROW_DEFAULTS)
    if unknown:
        raise TypeError(f"not audit-log columns: {sorted(unknown)}")
    row = dict(_ROW_DEFAULTS)
    row.update(fields)
    row["request_id"] = request_id or uuid.uuid4().hex
    row["ts"] = ts or utcnow()
    row["model"] = model
    row["input_hash"] = input_hash
    row["answered_by"] = answered_by
    row["latency_ms"] = latency_ms
    if row["reason"] and len(row["reason"]) > 255:
        row["reason"] = row["reason"][:252] + "..."
    return row


def audit_rows(task: str, texts: Sequence[str], decisions: Sequence[Decision], cas: Cascade | None,
               tcfg: TeacherConfig, tokens: tuple[float, float], channel: str, log_text: bool, *,
               request_ids: Sequence[str] | None = None, client_key_id: str | None = None,
               status_code: int = 200, answered_by: str | None = None, threshold: float | None = None,
               student_version_id: int | None = None) -> list[dict[str, Any]]:
    """Audit-log rows for cascade decisions, one per text.

    ``cas`` supplies λ and the student version (``threshold``/``student_version_id`` when
    there is no cascade, e.g. shadow mode); ``answered_by`` overrides the decisions' own
    (``shadow``); ``tokens`` is the task's average (input, output) teacher tokens for the
    teacher-only cost estimate of requests the teacher did not see.
    """
    now = utcnow()
    lam = cas.threshold if cas is not None else threshold
    svid = cas.student_version_id if cas is not None else student_version_id
    rows = []
    for i, (x, d) in enumerate(zip(texts, decisions)):
        rows.append(request_row(
            request_id=request_ids[i] if request_ids is not None else None, ts=now, channel=channel,
            task=task, model=f"downsize/{task}", input_hash=text_hash(x), input_text=x if log_text else None,
            answer=d.label, answered_by=answered_by or d.answered_by, reason=d.reason,
            confidence=d.confidence, threshold=lam, student_version_id=svid,
            student_label=d.student_label, teacher_label=d.teacher_label,
            teacher_input_tokens=d.teacher_input_tokens, teacher_output_tokens=d.teacher_output_tokens,
            teacher_cost_usd=d.teacher_cost_usd, teacher_only_cost_usd=teacher_only_cost(tcfg, d, tokens),
            latency_ms=d.latency_ms, student_latency_ms=d.student_latency_ms,
            teacher_latency_ms=d.teacher_latency_ms, student_cpu_ms=d.student_cpu_ms,
            client_key_id=client_key_id, status_code=status_code,
        ))
    return rows


# ---------------------------------------------------------------------------------
# the writer
# ---------------------------------------------------------------------------------
_REQUEST, _SPOT, _LABEL = "request", "spot_check", "label"
_AFTER = {_REQUEST: (_SPOT, _LABEL), _SPOT: (_LABEL,), _LABEL: ()}


@dataclass
class _Marker:
    """Put in the queue by :meth:`AuditWriter.flush`; set once everything before it is written."""

    done: threading.Event


class AuditWriter:
    """Writes audit rows (and spot checks, shadow labels) from a background thread.

    ``submit`` only puts the row on a queue: no database round trip on the request path.
    The thread waits up to ``flush_interval_s`` to gather rows, then writes up to
    ``max_batch`` of them in one transaction. A failing batch is retried with backoff; if
    it keeps failing the rows are tried one by one, so that one bad row (logged with its
    request id and counted in ``stats['dropped']``) cannot lose the others; if no row can
    be written at all (the database is down) the batch is kept and retried until
    :meth:`close`'s timeout. The thread logs every failure and never dies of one.

    Parameters
    ----------
    store : Store
    flush_interval_s : float
        Longest a row waits in the queue while the writer is keeping up.
    max_batch : int
        Rows per transaction.
    max_pending : int
        Beyond this many queued items new ones are dropped (and counted), so that a dead
        database cannot exhaust memory.
    retries : int
        Retries of a failed batch before it is split.

    Examples
    --------
    >>> with AuditWriter(store) as w:  # doctest: +SKIP
    ...     w.submit(row)
    ... # leaving the block (or ``close()``) writes everything submitted
    """

    def __init__(self, store: Store, *, flush_interval_s: float = 0.1, max_batch: int = 1000,
                 max_pending: int = 1_000_000, retries: int = 3) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.store = store
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.retries = retries
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._submitted = 0  # guarded by _lock
        self._done = 0  # written or dropped; guarded by _lock
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._hurry = threading.Event()
        self._give_up_at: float | None = None
        self._dropped_at_close = 0
        self.stats: dict[str, int] = {"written": 0, "spot_checks": 0, "labels": 0, "batches": 0,
                                      "failed_batches": 0, "dropped": 0}

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> AuditWriter:
        if self._thread is not None:
            raise RuntimeError("AuditWriter already started")
        self._stop.clear()
        self._give_up_at = None
        self._thread = threading.Thread(target=self._run, name="downsize-audit", daemon=True)
        self._thread.start()
        return self

    def __enter__(self) -> AuditWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pending(self) -> int:
        """Rows submitted and neither written nor dropped yet."""
        with self._lock:
            return self._submitted - self._done

    def _finished(self, n: int) -> None:
        with self._lock:
            self._done += n

    def close(self, timeout: float | None = 60.0) -> bool:
        """Write everything submitted so far and stop the thread; False if a row was lost (or it timed out)."""
        if self._thread is None:
            return True
        self._give_up_at = None if timeout is None else time.monotonic() + timeout
        self._dropped_at_close = self.stats["dropped"]
        self._stop.set()
        self._q.put(None)
        self._hurry.set()
        self._thread.join(None if timeout is None else timeout + 2.0)  # room to record giving up
        ok = not self._thread.is_alive()
        lost = self.stats["dropped"] - self._dropped_at_close
        if not ok:
            log.error("audit writer did not finish within %ss: %d row(s) not written", timeout, self.pending)
        self._thread = None
        return ok and not self.pending and not lost

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything submitted before this call is written (or given up on)."""
        if self._thread is None:
            return self.pending == 0
        marker = _Marker(threading.Event())
        self._q.put(marker)
        self._hurry.set()
        return marker.done.wait(timeout)

    # -- producers (any thread, never block) --------------------------------------------
    def _put(self, item: tuple[str, Any]) -> None:
        with self._lock:
            full = self._submitted - self._done >= self.max_pending
            if full:
                self.stats["dropped"] += 1
                dropped = self.stats["dropped"]
            else:
                self._submitted += 1
        if full:
            if dropped % 1000 == 1:
                log.error("audit queue full (%d items): dropping rows (%d so far)", self.max_pending, dropped)
            return
        self._q.put(item)

    def submit(self, row: dict[str, Any]) -> None:
        """Queue one audit-log row (see :func:`request_row`)."""
        self._put((_REQUEST, row))

    def submit_many(self, rows: Sequence[dict[str, Any]]) -> None:
        for r in rows:
            self._put((_REQUEST, r))

    def submit_spot_check(self, row: dict[str, Any]) -> None:
        """Queue one :class:`~downsize.store.SpotCheck` row (a dict of its columns)."""
        self._put((_SPOT, row))

    def submit_label(self, task: str, text: str, label: str, teacher_call_id: int | None) -> None:
        """Queue a teacher label for ``text`` (added as an example + a ``teacher`` label)."""
        self._put((_LABEL, (task, text, label, teacher_call_id)))

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            items: list[Any] = []
            try:
                try:
                    first = self._q.get(timeout=0.5)
                except queue.Empty:
                    if self._stop.is_set():
                        return
                    continue
                if first is not None:
                    items.append(first)
                    if isinstance(first, tuple) and not self._stop.is_set():
                        self._hurry.wait(self.flush_interval_s)  # let a batch gather (flush/close cut it short)
                self._hurry.clear()
                stop = self._collect(items) or first is None
                self._write_until_done(items)
                while stop:  # write whatever is left, then end
                    items = []
                    self._collect(items)
                    if not items:
                        return
                    self._write_until_done(items)
            except Exception:  # never let the thread die silently
                lost = sum(1 for it in items if isinstance(it, tuple))
                log.exception("audit writer: unexpected error; %d row(s) of this batch lost, continuing", lost)
                with self._lock:
                    self.stats["dropped"] += lost
                    self._done += lost
                for it in items:
                    if isinstance(it, _Marker):
                        it.done.set()
                time.sleep(0.1)

    def _collect(self, items: list[Any]) -> bool:
        """Move queued items into ``items`` (up to max_batch rows); True if the stop sentinel came."""
        stop = False
        n = sum(1 for it in items if isinstance(it, tuple))
        while n < self.max_batch:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is None:
                stop = True
                continue
            items.append(item)
            n += isinstance(item, tuple)
        return stop

    def _write_until_done(self, items: list[Any]) -> None:
        """Write ``items``; while the store takes nothing, back off and retry (until close's timeout)."""
        rows = [it for it in items if isinstance(it, tuple)]
        while rows:
            rows = self._write(rows)
            if not rows:
                break
            if self._give_up_at is not None and time.monotonic() > self._give_up_at:
                log.error("audit writer: giving up on %d row(s) at shutdown: the store takes none", len(rows))
                with self._lock:
                    self.stats["dropped"] += len(rows)
                self._finished(len(rows))
                break
            time.sleep(0.5)
        for it in items:
            if isinstance(it, _Marker):
                it.done.set()

    def _write(self, items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        """Write the rows; return those not written because the store takes none right now."""
        for kind, fn in ((_REQUEST, self.store.log_requests), (_SPOT, self.store.add_spot_checks),
                         (_LABEL, self._write_labels)):
            rows = [p for k, p in items if k == kind]
            if not rows:
                continue
            left = self._write_kind(kind, rows, fn)
            self._finished(len(rows) - len(left))
            if left:
                return [(kind, p) for p in left] + [it for it in items if it[0] in _AFTER[kind]]
        with self._lock:
            self.stats["batches"] += 1
        return []

    def _write_kind(self, kind: str, rows: list[Any], fn: Callable[[list[Any]], Any]) -> list[Any]:
        """Write ``rows`` with ``fn``; return the rows left unwritten because the store is down."""
        delay = 0.05
        for attempt in range(self.retries + 1):
            try:
                fn(rows)
                self._count(kind, len(rows))
                return []
            except Exception as exc:
                with self._lock:
                    self.stats["failed_batches"] += 1
                log.warning("audit writer: writing %d %s row(s) failed (attempt %d/%d): %s",
                            len(rows), kind, attempt + 1, self.retries + 1, _short(exc))
                if attempt < self.retries:
                    time.sleep(delay)
                    delay *= 4
        # one at a time, so that a bad row cannot take the others with it
        for i, r in enumerate(rows):
            try:
                fn([r])
                self._count(kind, 1)
            except Exception as exc:
                if not self._store_alive():
                    log.error("audit writer: the store is unreachable (%s); keeping %d row(s) to retry",
                              _short(exc), len(rows) - i)
                    return rows[i:]
                rid = r.get("request_id") if isinstance(r, dict) else None
                log.error("audit writer: dropping one %s row (request_id=%s): %s", kind, rid, _short(exc))
                with self._lock:
                    self.stats["dropped"] += 1
        return []

    def _store_alive(self) -> bool:
        try:
            self.store.ping()
            return True
        except Exception:
            return False

    def _count(self, kind: str, n: int) -> None:
        key = {_REQUEST: "written", _SPOT: "spot_checks", _LABEL: "labels"}[kind]
        with self._lock:
            self.stats[key] += n

    def _write_labels(self, items: list[tuple[str, str, str, int | None]]) -> None:
        by_task: dict[str, list[tuple[str, str, int | None]]] = {}
        for task, text, label, cid in items:
            by_task.setdefault(task, []).append((text, label, cid))
        for task, rows in by_task.items():
            ids = self.store.add_examples(task, [t for t, _, _ in rows], source="gateway:shadow")
            self.store.add_labels(task, [(i, lab) for i, (_, lab, _) in zip(ids, rows)], source="teacher",
                                  teacher_call_ids=[c for _, _, c in rows])


def _short(exc: BaseException) -> str:
    s = f"{type(exc).__name__}: {exc}"
    return s if len(s) <= 300 else s[:297] + "..."


# ---------------------------------------------------------------------------------
# reading back
# ---------------------------------------------------------------------------------
_REL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.I)
_UNITS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """``--since``: an ISO date/time (UTC) or a span back from now (``90s``, ``15m``, ``2h``, ``7d``).

    Raises
    ------
    DataError
        For anything else, quoting the value.
    """
    m = _REL.match(value)
    if m:
        return (now or utcnow()) - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2).lower()])
    try:
        dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DataError(
            f"--since {value!r}: expected an ISO date/time like 2026-05-01 or 2026-05-01T12:00, "
            "or a span like 30m, 2h, 7d"
        ) from None
    if dt.tzinfo is not None:
        from datetime import timezone

        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt


def _row_dict(r: RequestLog) -> dict[str, Any]:
    return {c: getattr(r, c) for c in LOG_COLUMNS}


def read_log(store: Store, *, task: str | None = None, since: datetime | None = None,
             after_id: int | None = None, last: int | None = None) -> list[dict[str, Any]]:
    """Audit rows, oldest first: all after ``after_id``/``since``, or only the ``last`` n."""
    q = select(RequestLog)
    if task is not None:
        q = q.where(RequestLog.task == task)
    if since is not None:
        q = q.where(RequestLog.ts >= since)
    if after_id is not None:
        q = q.where(RequestLog.id > after_id)
    if last is not None:
        q = q.order_by(RequestLog.id.desc()).limit(last)
    else:
        q = q.order_by(RequestLog.id)
    with store.session() as s:
        rows = [_row_dict(r) for r in s.scalars(q)]
    if last is not None:
        rows.reverse()
    return rows


def _iter_log(store: Store, *, task: str | None, since: datetime | None, chunk: int) -> Iterator[dict[str, Any]]:
    after = 0
    while True:
        q = select(RequestLog).where(RequestLog.id > after)
        if task is not None:
            q = q.where(RequestLog.task == task)
        if since is not None:
            q = q.where(RequestLog.ts >= since)
        with store.session() as s:
            rows = [_row_dict(r) for r in s.scalars(q.order_by(RequestLog.id).limit(chunk))]
        if not rows:
            return
        yield from rows
        after = rows[-1]["id"]


def export_log(store: Store, path: str | Path, *, task: str | None = None, since: datetime | None = None,
               chunk: int = 5000) -> int:
    """Write the audit log to CSV/TSV or JSONL (by suffix, optionally ``.gz``), streaming; returns rows.

    Raises
    ------
    DataError
        For an output suffix other than .csv, .tsv, .jsonl, .ndjson (each optionally .gz).
    """
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    gz = bool(suffixes) and suffixes[-1] == ".gz"
    kind = (suffixes[:-1] if gz else suffixes)[-1:] or [""]
    kind_s = kind[0]
    if kind_s not in (".csv", ".tsv", ".jsonl", ".ndjson"):
        raise DataError(f"{path}: unknown output type {kind_s or '(none)'}; use .csv, .tsv or .jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    opener: Any = gzip.open if gz else open
    n = 0
    with opener(path, "wt", encoding="utf-8", newline="") as fh:
        rows = _iter_log(store, task=task, since=since, chunk=chunk)
        if kind_s in (".jsonl", ".ndjson"):
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n")
                n += 1
        else:
            w = csv.DictWriter(fh, fieldnames=list(LOG_COLUMNS), delimiter="\t" if kind_s == ".tsv" else ",")
            w.writeheader()
            for r in rows:
                w.writerow({k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()})
                n += 1
    return n


def _json_default(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else str(v)
