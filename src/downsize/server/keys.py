"""Gateway API keys: created once, stored only as a sha256, revocable.

A key looks like ``dsk_<43 url-safe characters>`` (256 random bits). Only its sha256 is kept
in the ``api_keys`` table, next to a short public ``key_id`` (``key_<8 hex>``) that names it
in ``downsize keys list``, in the audit log (``client_key_id``) and in ``keys revoke``.

:class:`KeyRing` is the gateway's in-memory view of the active keys: a lookup is a hash and
a dict access, with no database round trip; it is reloaded every few seconds (so that a
revocation takes effect within ``refresh_s``); an unknown key is looked up in the store at
once (so that a key created a moment ago works immediately), at most once a second per key
and 20 times a second in all.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from ..errors import DownsizeError
from ..store import ApiKey, Store, utcnow

__all__ = ["KEY_PREFIX", "KeyInfo", "NewKey", "KeyRing", "create_key", "list_keys", "revoke_key", "hash_key"]

KEY_PREFIX = "dsk_"


def hash_key(secret: str) -> str:
    """sha256 hex of a key: what the store keeps."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    """What is known about a key without its secret."""

    key_id: str
    name: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class NewKey:
    """A freshly created key: the only time the secret exists outside the client."""

    key_id: str
    name: str
    secret: str = field(repr=False)


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(row.key_id, row.name, row.created_at, row.revoked_at)


def create_key(store: Store, name: str) -> NewKey:
    """Create a key called ``name``; the returned secret is not stored and cannot be shown again.

    Raises
    ------
    DownsizeError
        For an empty name or one longer than 255 characters.
    """
    name = name.strip()
    if not name or len(name) > 255:
        raise DownsizeError(f"a key name must be 1-255 characters, got {len(name)}")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = "key_" + secrets.token_hex(4)
    store.add(ApiKey(key_id=key_id, key_hash=hash_key(secret), name=name))
    return NewKey(key_id, name, secret)


def list_keys(store: Store, *, include_revoked: bool = True) -> list[KeyInfo]:
    """Every key, oldest first."""
    with store.session() as s:
        q = select(ApiKey).order_by(ApiKey.id)
        if not include_revoked:
            q = q.where(ApiKey.revoked_at.is_(None))
        return [_info(r) for r in s.scalars(q)]


def revoke_key(store: Store, key_id: str) -> KeyInfo:
    """Revoke a key (the row stays, with ``revoked_at``); revoking twice keeps the first time.

    Raises
    ------
    DownsizeError
        No key has that id (the message lists the ids there are).
    """
    with store.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
        if row is None:
            known = ", ".join(s.scalars(select(ApiKey.key_id).order_by(ApiKey.id))) or "none"
            raise DownsizeError(f"no API key {key_id!r} (keys: {known}); see `downsize keys list`")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return _info(row)


class KeyRing:
    """The active keys, in memory, for the gateway.

    Parameters
    ----------
    store : Store
    refresh_s : float
        The ring is reloaded when older than this (revocations take effect within it).
    miss_ttl_s : float
        An unknown key is looked up in the store at most once per this interval.
    max_lookups_per_s : float
        Store lookups of unknown keys, at most, per second (all keys together).
    """

    def __init__(self, store: Store, *, refresh_s: float = 5.0, miss_ttl_s: float = 1.0,
                 max_lookups_per_s: float = 20.0) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.miss_ttl_s = miss_ttl_s
        self.max_lookups_per_s = max_lookups_per_s
        self._by_hash: dict[str, str] = {}
        self._loaded_at = float("-inf")
        self._misses: dict[str, float] = {}
        self._lookups: list[float] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._by_hash)

    def reload(self) -> None:
        """Read the active keys from the store (blocking: call it off the event loop)."""
        with self.store.session() as s:
            rows = s.execute(select(ApiKey.key_hash, ApiKey.key_id).where(ApiKey.revoked_at.is_(None)))
            fresh = {h: k for h, k in rows}
        with self._lock:
            self._by_hash = fresh
            self._loaded_at = time.monotonic()

    def lookup(self, secret: str) -> str | None:
        """The key id of an active key, or None (no database access)."""
        return self._by_hash.get(hash_key(secret))

    def stale(self) -> bool:
        return time.monotonic() - self._loaded_at > self.refresh_s

    def may_fetch(self, secret: str) -> bool:
        """Whether an unknown key may be looked up in the store now (rate-limited, per key and overall)."""
        now = time.monotonic()
        h = hash_key(secret)
        with self._lock:
            if now - self._misses.get(h, float("-inf")) < self.miss_ttl_s:
                return False
            self._lookups = [t for t in self._lookups if now - t < 1.0]
            if len(self._lookups) >= self.max_lookups_per_s:
                return False
            self._lookups.append(now)
            if len(self._misses) > 10_000:
                self._misses.clear()
            self._misses[h] = now
            return True

    def fetch(self, secret: str) -> str | None:
        """Look one key up in the store (blocking) and remember it if it is active."""
        h = hash_key(secret)
        with self.store.session() as s:
            key_id = s.scalar(select(ApiKey.key_id).where(ApiKey.key_hash == h, ApiKey.revoked_at.is_(None)))
        if key_id is not None:
            with self._lock:
                self._by_hash = {**self._by_hash, h: key_id}
                self._misses.pop(h, None)
        return key_id
