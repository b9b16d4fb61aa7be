"""The :class:`AuditWriter`: a background thread that drains a queue into the store in batches, so
the gateway never waits on the database. It also records the gateway's other side products (spot
checks, shadow-mode teacher labels)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


from ..store import Store
from .record import AuditRecord, ShadowLabel, SpotCheckRecord

__all__ = ["AuditWriter"]

log = logging.getLogger("downsize.audit")


_REQUEST, _SPOT, _LABEL = "request", "spot_check", "label"
_AFTER = {_REQUEST: (_SPOT, _LABEL), _SPOT: (_LABEL,), _LABEL: ()}


@dataclass
class _Marker:
    """Put in the queue by :meth:`AuditWriter.flush`; set once everything before it is written."""

    done: threading.Event


class AuditWriter:
    """Writes audit records (and spot checks, shadow labels) from a background thread.

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
    ...     w.submit(record)
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

    def submit(self, record: AuditRecord) -> None:
        """Queue one audit-log record."""
        self._put((_REQUEST, record))

    def submit_many(self, records: Sequence[AuditRecord]) -> None:
        for r in records:
            self._put((_REQUEST, r))

    def submit_spot_check(self, record: SpotCheckRecord) -> None:
        """Queue one spot check."""
        self._put((_SPOT, record))

    def submit_label(self, label: ShadowLabel) -> None:
        """Queue a teacher answer seen in shadow mode (added as an example + a ``teacher`` label)."""
        self._put((_LABEL, label))

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
        for kind, fn in ((_REQUEST, self._write_requests), (_SPOT, self._write_spot_checks),
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
                rid = getattr(r, "request_id", None)
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

    def _write_requests(self, records: list[AuditRecord]) -> None:
        self.store.log_requests([r.row() for r in records])

    def _write_spot_checks(self, records: list[SpotCheckRecord]) -> None:
        self.store.add_spot_checks([r.row() for r in records])

    def _write_labels(self, items: list[ShadowLabel]) -> None:
        by_task: dict[tuple[str, str], list[tuple[str, str, int | None]]] = {}
        for task, text, label, cid, origin in items:
            by_task.setdefault((task, origin), []).append((text, label, cid))
        for (task, origin), rows in by_task.items():
            ids = self.store.add_examples(task, [t for t, _, _ in rows], source=f"gateway:{origin}")
            self.store.add_labels(task, [(i, lab) for i, (_, lab, _) in zip(ids, rows)], source="teacher",
                                  teacher_call_ids=[c for _, _, c in rows], origin=origin)


def _short(exc: BaseException) -> str:
    s = f"{type(exc).__name__}: {exc}"
    return s if len(s) <= 300 else s[:297] + "..."
