"""The content-addressed record of paid teacher calls, read and written off the event loop.

Every paid call is a :class:`~downsize.store.TeacherCall` row keyed by the sha256 of everything
that determines it (base URL, model, messages, response format, max tokens), so a repeated request
— a re-run, a resumed labelling job, the same text escalated twice — is answered from the store for
free. The store is synchronous (SQLAlchemy); :class:`CallCache` runs its queries in worker threads
so that a gateway escalation never blocks the event loop on the database.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from ..store import Store, TeacherCall, dumps

__all__ = ["CallCache", "request_hash"]


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

    def __init__(self, store: Store | None) -> None:
        self.store = store
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

    async def record(self, call: TeacherCall) -> TeacherCall | None:
        """Record a paid call (once; if the same request was recorded meanwhile, that row)."""
        if self.store is None:
            return None
        return await asyncio.to_thread(self.store.record_call, call)
