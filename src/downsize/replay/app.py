"""The replay teacher: an OpenAI-compatible server that answers with recorded labels.

It plays the large model from a labelled file (``text,label``), so the whole pipeline can
run offline and quality figures mean "agreement with the teacher". It speaks the prompt
protocol of :mod:`downsize.teacher`: the text is the content of a user message (the first
user message that is a known text wins, so a repair retry is answered too).

Knobs for realism: ``latency_ms`` per answer, ``error_rate`` (seeded HTTP 500s) and
``noise`` (a seeded, per-text-deterministic share of wrong labels). ``GET /stats`` counts
the chat requests answered, by status; a request whose client went away while it was
being answered (or before its body arrived) is counted as ``abandoned`` instead (it was never
delivered, so never paid), quietly: a client that goes away is routine, not a server error.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from ..data import read_texts
from ..data.synth import clean_generated
from ..teacher.prompt import content_text, generation_target
from .answers import content_for, noisy, structured_value, vocabulary

__all__ = ["create_replay_app", "load_records"]

_JSON = "application/json"


def _err(status: int, message: str, type_: str, code: str | None = None, param: str | None = None) -> Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return Response(json.dumps(body), status_code=status, media_type=_JSON)


async def _sleep_unless_gone(request: Request, seconds: float) -> bool:
    """Sleep; False as soon as the client disconnects (watching ``receive`` for it)."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(gone())
    try:
        done, _ = await asyncio.wait({watcher}, timeout=seconds)
    finally:
        watcher.cancel()
    return not done


def _tokens(chars: int) -> int:
    return max(1, math.ceil(chars / 4))


def create_replay_app(
    records: Mapping[str, str],
    *,
    latency_ms: float = 0.0,
    error_rate: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
    labels: Sequence[str] | None = None,
    pool: Mapping[str, str] | None = None,
) -> FastAPI:
    """A FastAPI app serving ``records`` (text → recorded answer) over ``POST /v1/chat/completions``.

    Parameters
    ----------
    records : mapping of str to str
        The recorded answers: labels, or the JSON of structured answers (see :mod:`.answers`).
    latency_ms : float
        Sleep before each answer.
    error_rate : float
        Share of requests answered with HTTP 500 (drawn from ``random.Random(seed)``).
    noise : float
        Share of texts that get a wrong answer (:func:`.answers.noisy`: another label, a label
        dropped or added, a field dropped or altered, a mention dropped), chosen by a hash of
        ``seed`` and the text, so a text is always answered the same way.
    seed : int
    labels : sequence of str, optional
        The label set for noise; defaults to the labels in ``records``.
    pool : mapping of str to str, optional
        Recorded examples (text → answer) that generation requests are answered from, by target
        (a label; a label of a list; a field with a value; a mention's type).

    Returns
    -------
    FastAPI
        ``app.state.stats`` is ``{"requests": n, "by_status": {"200": n, ...},
        "abandoned": n, "in_flight": n}``; ``GET /stats`` (and :attr:`ReplayServer.stats`) add
        ``oldest_in_flight_ms``, the age of the oldest request being answered.
    """
    for name, value in (("error_rate", error_rate), ("noise", noise)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value}")
    if latency_ms < 0:
        raise ValueError(f"latency_ms must be >= 0, got {latency_ms}")
    records = dict(records)
    by_target = _targets(pool or {})
    for text, answer in (pool or {}).items():
        records.setdefault(text, answer)
        records.setdefault(clean_generated(text), answer)  # as `downsize synth` reads a written text back
    vocab = sorted(set(labels)) if labels is not None else vocabulary(list(records.values()))
    rng = random.Random(seed)
    ids = itertools.count(1)
    stats: dict[str, Any] = {"requests": 0, "by_status": {}, "abandoned": 0, "in_flight": 0}
    started: dict[int, float] = {}  # request number -> when it arrived (monotonic)

    def answer_for(text: str) -> str:
        answer = records[text]
        if noise > 0:
            digest = hashlib.sha256(f"{seed}\x00{text}".encode()).digest()
            if int.from_bytes(digest[:8], "big") / 2**64 < noise:
                answer = noisy(answer, text, random.Random(digest[8:16]), vocab)
        return answer

    app = FastAPI(title="downsize replay teacher", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.stats = stats
    app.state.records = records

    def count(status: int) -> None:
        stats["requests"] += 1
        key = str(status)
        stats["by_status"][key] = stats["by_status"].get(key, 0) + 1

    async def handle(request: Request, n: int) -> Response | None:
        try:
            raw = await request.body()
        except ClientDisconnect:  # the client went away before sending its whole body: abandoned
            return None
        try:
            payload = json.loads(raw)
        except ValueError:
            return _err(400, "replay: the request body is not valid JSON", "invalid_request_error")
        messages = payload.get("messages") if isinstance(payload, dict) else None
        if not isinstance(messages, list) or not messages:
            return _err(400, "replay: 'messages' must be a non-empty list", "invalid_request_error", param="messages")
        if latency_ms > 0 and not await _sleep_unless_gone(request, latency_ms / 1000.0):
            return None
        if error_rate > 0 and rng.random() < error_rate:
            return _err(500, "replay: injected server error (--error-rate)", "server_error")
        gen = generation_target(messages)
        if gen is not None:
            texts = by_target.get(gen[0])
            if not texts:
                return _err(404, f"replay: no example of {gen[0]!r} in the generation pool "
                            f"({sum(map(len, by_target.values())):,} examples)", "not_found", code="no_example")
            return _completion(payload, n, texts[gen[1] % len(texts)], sum(
                len(content_text(m.get("content")) or "") for m in messages if isinstance(m, dict)))
        text = None
        chars = 0
        for m in messages:
            if not isinstance(m, dict):
                continue
            content = content_text(m.get("content")) or ""
            chars += len(content)
            if text is None and m.get("role") == "user" and content in records:
                text = content
        if text is None:
            return _err(
                404,
                f"replay: the text (a user message's content) is not in the replay file "
                f"({len(records):,} recorded texts)",
                "not_found",
                code="text_not_found",
                param="messages",
            )
        label = answer_for(text)
        fmt = payload.get("response_format")
        structured = isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json_object")
        return _completion(payload, n, content_for(label, json_mode=structured), chars)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        n = next(ids)
        started[n] = time.monotonic()
        stats["in_flight"] += 1
        try:
            resp = await handle(request, n)
        finally:
            stats["in_flight"] -= 1
            del started[n]
        if resp is None:  # the client went away while we "thought": never answered, never paid
            stats["abandoned"] += 1
            return Response(status_code=499)
        count(resp.status_code)
        return resp

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "replay", "object": "model", "owned_by": "downsize"}]}

    @app.get("/stats")
    async def get_stats() -> dict[str, Any]:
        return snapshot()

    def snapshot() -> dict[str, Any]:
        oldest = min(started.values(), default=None)
        age = 0.0 if oldest is None else (time.monotonic() - oldest) * 1000.0
        return {**stats, "by_status": dict(stats["by_status"]), "oldest_in_flight_ms": age}

    app.state.snapshot = snapshot

    return app


def _completion(payload: dict[str, Any], n: int, content: str, chars: int) -> Response:
    prompt_tokens, completion_tokens = _tokens(chars), _tokens(len(content))
    body = {
        "id": f"chatcmpl-replay-{n}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(payload.get("model") or "replay"),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return Response(json.dumps(body), media_type=_JSON)


def _targets(pool: Mapping[str, str]) -> dict[str, list[str]]:
    """Target → the pool's texts whose recorded answer has it (in the pool's order)."""
    out: dict[str, list[str]] = {}
    for text, recorded in pool.items():
        value = structured_value(recorded)
        if value is None:
            keys = [recorded]
        elif isinstance(value, dict):
            keys = [k for k, v in value.items() if v not in (None, "", [])]
        else:
            keys = [m.get("type") if isinstance(m, dict) else m for m in value]
        for k in dict.fromkeys(x for x in keys if isinstance(x, str)):
            out.setdefault(k, []).append(text)
    return out


def load_records(
    path: str | os.PathLike[str], *, text_col: str = "text", label_col: str = "label"
) -> dict[str, str]:
    """``text → label`` from a labelled data file (the first row of a repeated text wins)."""
    data = read_texts(path, text_col, label_col=label_col)
    records: dict[str, str] = {}
    for text, label in zip(data.texts, data.labels or []):
        records.setdefault(text, label)
    return records
