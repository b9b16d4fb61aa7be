"""The content-addressed record of paid teacher calls, read and written off the event loop.

Every paid call is a :class:`~downsize.store.TeacherCall` row keyed by the sha256 of everything
that determines it (base URL, model, messages, response format, max tokens), so a repeated request
— a re-run, a resumed labelling job, the same text escalated twice — is answered from the store for
free. A call is *claimed* in the store before it is sent (:meth:`CallCache.claim`; see
:mod:`downsize.store.claims`), so two processes never pay for the same request: the second waits
for the first's record. The store is synchronous (SQLAlchemy); :class:`CallCache` runs its queries
in worker threads so that a gateway escalation never blocks the event loop on the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from ..store import CLAIMED, RECLAIMED, Store, TeacherCall, dumps, new_owner
from .budget import Budget, SharedBudget

__all__ = ["CallCache", "CallInFlight", "request_hash"]


class CallInFlight(Exception):
    """The request is claimed by a live caller (another process, or this one): its answer is coming.

    Raised by :meth:`downsize.teacher.AsyncTeacher.ask` with ``wait=False`` so that a labelling
    run can do other texts first; not an error (it is never shown).
    """


def request_hash(base_url: str, model: str, messages: Sequence[dict[str, Any]],
                 response_format: dict[str, Any] | None, max_tokens: int | None) -> str:
    """The content address of a request: sha256 of its canonical JSON."""
    key = {"base_url": base_url, "model": model, "messages": list(messages),
           "response_format": response_format, "max_tokens": max_tokens}
    return hashlib.sha256(dumps(key).encode("utf-8")).hexdigest()


class CallCache:
    """Look up and record paid calls in ``store`` (nothing is cached without one).

    :meth:`prefetch` checks many keys in a few queries before a labelling run; :meth:`get` then
    skips its per-call lookup for a key found missing (once: another process may record it later).
    """

    def __init__(self, store: Store | None, *, lease_s: float = 600.0) -> None:
        self.store = store
        self.lease_s = lease_s
        self.owner = new_owner()  # this client's claims: host, pid, a token
        self._absent: set[str] = set()

    def __bool__(self) -> bool:
        return self.store is not None

    def prefetch(self, keys: Iterable[str]) -> int:
        """How many of ``keys`` are recorded; remembers the others as absent."""
        if self.store is None:
            return 0
        keys = set(keys)
        known = self.store.recorded_hashes(keys)
        self._absent |= keys - known
        return len(known)

    async def get(self, key: str) -> TeacherCall | None:
        """The recorded call for ``key``, or None (a key prefetch found absent is not looked up)."""
        if self.store is None:
            return None
        if key in self._absent:
            self._absent.discard(key)
            return None
        return await asyncio.to_thread(self.store.cached_call, key)

    async def claim(self, key: str, *, reserve_usd: float, budget: Budget | None, task: str | None) -> str:
        """Claim ``key`` before sending it: ``claimed``, ``reclaimed``, ``recorded`` or ``busy``
        (:meth:`downsize.store.Store.claim_call`). Without a store every call is ``claimed``.

        Raises BudgetExceeded when a :class:`SharedBudget` of this store would be passed. A claim
        made while the caller was cancelled is marked abandoned at once (never left held).
        """
        if self.store is None:
            return CLAIMED
        cap = budget.ledger_cap(self.store) if isinstance(budget, SharedBudget) else None
        store, lock, box = self.store, threading.Lock(), {"cancelled": False, "state": ""}

        def work() -> str:
            state = store.claim_call(key, owner=self.owner, lease_s=self.lease_s, reserve_usd=reserve_usd,
                                     budget=cap, task=task)
            with lock:
                if box["cancelled"]:  # the caller is gone: it will never send this call
                    if state in (CLAIMED, RECLAIMED):
                        self.release(key, abandoned=state == RECLAIMED)
                else:
                    box["state"] = state
            return state

        try:
            return await asyncio.to_thread(work)
        except asyncio.CancelledError:  # the thread runs on; whichever side finishes last gives the claim up
            with lock:
                box["cancelled"] = True
                state = box["state"]
            if state in (CLAIMED, RECLAIMED):
                self.release(key, abandoned=state == RECLAIMED)
            raise

    def release(self, key: str, *, abandoned: bool = False) -> None:
        """Give up this client's claim on ``key`` (synchronous: also runs while being cancelled).

        ``abandoned``: the request may have reached the teacher (cancelled in flight), so the claim
        stays, expired: whoever sends it next counts it as possibly paid twice. Otherwise (the call
        failed unpaid) the claim is dropped.
        """
        if self.store is not None:
            self.store.release_claim(key, owner=self.owner, abandoned=abandoned)

    def release_all(self) -> None:
        """End every claim this client still holds (its teacher is closing): each is marked
        abandoned, so the next caller may send it at once and counts it as possibly paid."""
        if self.store is not None:
            self.store.release_owner(self.owner)

    async def record(self, call: TeacherCall) -> TeacherCall | None:
        """Record a paid call and drop its claim (a second payment is recorded too, never lost)."""
        if self.store is None:
            return None
        return await asyncio.to_thread(self.store.record_call, call, owner=self.owner)
