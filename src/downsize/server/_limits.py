"""Limits the gateway enforces: body size (ASGI middleware), per-key rate (token bucket),
and a circuit breaker per teacher (so a dead teacher costs one probe, not a deadline, per request)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

__all__ = ["RateLimiter", "CircuitBreaker", "BodyLimitMiddleware"]


class RateLimiter:
    """Token buckets keyed by client: ``per_minute`` tokens a minute, bursts up to ``burst``.

    Parameters
    ----------
    per_minute : int
        Sustained rate.
    burst : int, optional
        Bucket size (default: a minute's worth, so "N per minute" holds for any minute).
    clock : callable
        Monotonic seconds (tests pass a fake).
    """

    def __init__(self, per_minute: int, *, burst: int | None = None,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        if per_minute < 1:
            raise ValueError(f"per_minute must be >= 1, got {per_minute}")
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.capacity = float(burst if burst is not None else per_minute)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, list[float]] = {}

    def take(self, key: str) -> float:
        """Spend one token: 0.0 if allowed, else the seconds until one is available."""
        now = self.clock()
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            b = self._buckets[key] = [self.capacity, now]
        else:
            b[0] = min(self.capacity, b[0] + (now - b[1]) * self.rate)
            b[1] = now
        if b[0] >= 1.0:
            b[0] -= 1.0
            return 0.0
        return (1.0 - b[0]) / self.rate

    def _prune(self, now: float) -> None:
        full = [k for k, (tok, last) in self._buckets.items()
                if tok + (now - last) * self.rate >= self.capacity]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:  # all busy: forget the oldest
            for k in sorted(self._buckets, key=lambda k: self._buckets[k][1])[: len(self._buckets) // 2]:
                del self._buckets[k]


class CircuitBreaker:
    """Closed → (``failures`` in a row) → open for ``cooldown_s`` → half-open: one probe call.

    While open, callers skip the teacher at once (student fallback, or 503 for pass-through).
    """

    def __init__(self, *, failures: int = 5, cooldown_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._count = 0
        self._open_until = 0.0
        self._probing = False

    @property
    def state(self) -> str:
        if self._count < self.failures:
            return "closed"
        return "half_open" if self.clock() >= self._open_until else "open"

    def retry_in(self) -> float:
        return max(0.0, self._open_until - self.clock())

    def allow(self) -> bool:
        """May a call go to the teacher now? (In half-open state, only one at a time.)"""
        if self._count < self.failures:
            return True
        if self.clock() < self._open_until or self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._count = 0
        self._probing = False

    def failure(self) -> None:
        self._count += 1
        self._probing = False
        if self._count >= self.failures:
            self._open_until = self.clock() + self.cooldown_s

    def release(self) -> None:
        """A call that ended without telling either way (cancelled)."""
        self._probing = False


def _error_body(status: int, message: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error",
                                 "param": None, "code": code}}).encode()


class BodyLimitMiddleware:
    """Reject request bodies over ``max_bytes`` with 413 and an OpenAI-style error body.

    The body is read here (chunked uploads included) and handed to the app in one piece.
    An oversized body is still read and discarded up to ``drain_bytes`` before answering,
    so that a client that sends it all first (like the OpenAI SDK) sees the 413 rather than
    a reset connection; beyond that the connection is closed.
    """

    def __init__(self, app: Any, *, max_bytes: int, drain_bytes: int | None = None,
                 on_reject: Callable[[dict[str, Any], int, str, str], None] | None = None) -> None:
        self.app = app
        self.on_reject = on_reject  # (scope, status, message, code): the gateway audits and counts it
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes if drain_bytes is not None else max(8 * max_bytes, 16 << 20)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        declared: int | None = None
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    await self._reject(scope, send, 400, "the Content-Length header is not a number",
                                       "invalid_request")
                    return
                break
        too_big = declared is not None and declared > self.max_bytes
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            size += len(chunk)
            more = msg.get("more_body", False)
            if size > self.max_bytes:
                too_big = True
            if too_big:
                if size > self.drain_bytes:
                    break
                continue
            chunks.append(chunk)
        if too_big:
            n = declared if declared is not None else size
            await self._reject(scope, send, 413, f"request body of {n:,} bytes exceeds the limit of "
                               f"{self.max_bytes:,} bytes (server.max_body_bytes)", "request_too_large", close=more)
            return
        body = b"".join(chunks)
        delivered = False

        async def replay() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: dict[str, Any], send: Any, status: int, message: str, code: str, *,
                      close: bool = False) -> None:
        if self.on_reject is not None:
            try:
                self.on_reject(scope, status, message, code)
            except Exception:  # recording must never stop the answer
                logging.getLogger("downsize.server").exception("could not record a refused request")
        await self._reply(send, status, message, code, close=close)

    @staticmethod
    async def _reply(send: Any, status: int, message: str, code: str, *, close: bool = False) -> None:
        body = _error_body(status, message, code)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
