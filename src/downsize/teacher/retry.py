"""When a failed teacher call is tried again: :class:`RetryPolicy` and ``Retry-After``.

Only timeouts, connection errors, HTTP 429 and 5xx are retried (httpx itself retries only
connections, and leaves any other policy to its caller: this is that policy).
"""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass
from datetime import datetime, timezone

import httpx

__all__ = ["RetryPolicy", "RETRYABLE_TRANSPORT", "retry_after_s"]

#: Transport failures worth another attempt.
RETRYABLE_TRANSPORT = (
    httpx.ConnectError,  # refused, DNS, TLS
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,  # e.g. a kept-alive connection closed under us
)


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently a failed call is retried.

    Only timeouts, connection errors, HTTP 429 and 5xx are retried. The wait before
    retry ``n`` (1-based) is uniform in ``[0, min(backoff_max_s, backoff_base_s * 2**(n-1))]``
    ("full jitter"), or that upper bound without jitter; a ``Retry-After`` header
    (seconds or an HTTP date) replaces it, capped by ``backoff_max_s``.
    """

    max_retries: int = 4
    backoff_base_s: float = 0.25
    backoff_max_s: float = 20.0
    jitter: bool = True

    def delay(self, retry: int, *, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        if retry_after is not None:
            return max(0.0, min(retry_after, self.backoff_max_s))
        cap = min(self.backoff_max_s, self.backoff_base_s * 2 ** (retry - 1))
        return (rng or random).uniform(0.0, cap) if self.jitter else cap


def retry_after_s(headers: httpx.Headers, *, now: datetime | None = None) -> float | None:
    """Seconds from ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms``; None if absent."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())
