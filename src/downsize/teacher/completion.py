"""Reading a chat completion: its content and token usage, or a clear error for anything else."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..errors import TeacherResponseError
from .prompt import content_text

__all__ = ["ChatResult", "estimate_tokens", "read_completion"]

_NOT_JSON = object()


@dataclass
class ChatResult:
    """One successful logical chat call (after any retries).

    ``latency_ms`` runs from the first send to the answer, retries and backoff included, but
    not the time spent waiting for one of this client's ``max_concurrency`` slots.
    """

    content: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    attempts: int
    raw: dict[str, Any] = field(repr=False)


def estimate_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """Prompt tokens, estimated as chars/4 per message plus 4 for the chat template."""
    return sum(math.ceil(len(content_text(m.get("content")) or "") / 4) + 4 for m in messages)


def read_completion(resp: httpx.Response, start: float, attempts: int, messages: Sequence[dict[str, Any]], *,
                    base_url: str, redact: Callable[[str], str]) -> ChatResult:
    """The :class:`ChatResult` of a 2xx response, or :class:`~downsize.errors.TeacherResponseError`
    (carrying ``attempts``) for a body that is not a chat completion."""
    latency_ms = (time.perf_counter() - start) * 1000.0
    try:
        data = resp.json()
    except ValueError:
        data = _NOT_JSON  # raised below, outside the handler: no chained decode error holding the body
    if data is _NOT_JSON:
        snippet = redact(resp.text)[:300]
        err = TeacherResponseError(
            f"teacher at {base_url} answered HTTP {resp.status_code} with a body that is not "
            f"JSON: {snippet!r}",
            raw=snippet,
        )
        err.attempts = attempts  # type: ignore[attr-defined]
        raise err
    choices = data.get("choices") if isinstance(data, dict) else None
    message = choices[0].get("message") if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
    if not isinstance(message, dict):
        snippet = redact(json.dumps(data))[:300]
        err = TeacherResponseError(
            f"teacher at {base_url} answered with JSON that is not a chat completion "
            f"(no choices[0].message): {snippet}",
            raw=snippet,
        )
        err.attempts = attempts  # type: ignore[attr-defined]
        raise err
    content = content_text(message.get("content")) or ""
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    try:
        input_tokens = int(usage.get("prompt_tokens") or 0)
        output_tokens = int(usage.get("completion_tokens") or 0)
    except (TypeError, ValueError):
        input_tokens = output_tokens = 0
    if not usage:  # a server that reports no usage: estimate rather than call it free
        input_tokens = estimate_tokens(messages)
        output_tokens = max(1, math.ceil(len(content) / 4))
    return ChatResult(content, input_tokens, output_tokens, latency_ms, attempts, data)
