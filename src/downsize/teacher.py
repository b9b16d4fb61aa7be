"""The teacher: a client for any OpenAI-compatible ``/v1/chat/completions`` endpoint.

:class:`AsyncTeacher` makes one logical call with bounded retries (timeouts, connection
errors, 429 and 5xx only; exponential backoff with full jitter; ``Retry-After`` honoured),
asks for a label through a JSON schema, parses the answer strictly (:func:`parse_label`),
repairs one bad answer, records every paid call in the :class:`~downsize.store.Store`
under the hash of everything that determines it (so nothing is paid for twice) and keeps
within a dollar :class:`Budget`.

Prompt protocol (shared with the replay teacher and the gateway): the system message
carries the instructions and the labels; **the text to classify is the whole content of
the first user message**. A repair retry appends the bad assistant answer and a user
message asking again.

The API key is sent in the ``Authorization`` header only: it is never part of an
exception, a ``repr`` or a log line (error bodies are redacted in case a server echoes it).
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import hashlib
import json
import logging
import math
import random
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx

from ._prompt import _content_text, _response_format, build_messages, label_schema, parse_label
from .config import TaskConfig, TeacherConfig
from .errors import (
    BudgetExceeded,
    TeacherError,
    TeacherResponseError,
    TeacherStatusError,
    TeacherTimeout,
)
from .store import Store, TeacherCall, dumps

__all__ = [
    "RetryPolicy",
    "ChatResult",
    "TeacherAnswer",
    "AsyncTeacher",
    "Budget",
    "Reservation",
    "build_messages",
    "label_schema",
    "parse_label",
]

log = logging.getLogger("downsize.teacher")

#: How the label schema is sent, most specific first. OpenAI, vLLM and Ollama take
#: ``json_schema``. llama-cpp-python's server (checked with 0.3.36) validates
#: ``response_format.type`` against ``"text" | "json_object"`` and answers a
#: ``json_schema`` request with HTTP **500** ("Input should be 'text' or 'json_object'",
#: loc ``('body', 'response_format', 'type')``); it takes the schema as
#: ``{"type": "json_object", "schema": {...}}`` and turns it into a grammar. So a
#: rejection that names ``response_format`` is not retried: the client steps down to the
#: next style and remembers it for the rest of its life. ``none`` sends no
#: response_format and relies on the system prompt and :func:`parse_label`.
_FORMAT_STYLES = ("json_schema", "json_object", "none")

_RETRYABLE_TRANSPORT = (
    httpx.ConnectError,  # refused, DNS, TLS
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,  # e.g. a kept-alive connection closed under us
)


# ---------------------------------------------------------------------------------
# small value classes
# ---------------------------------------------------------------------------------
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


@dataclass
class TeacherAnswer:
    """The teacher's label for one text.

    ``label`` is always one of the task's labels, or None with ``status='parse_error'``.
    Tokens are those of the calls behind the answer (cached or not); ``cost_usd`` is what
    was paid *now* (0 for a cache hit). ``http_requests`` counts the HTTP requests made
    (retries included, 0 when cached) and ``cache_hits`` the calls served from the store.
    """

    label: str | None
    raw: str
    status: str  # ok | parse_error
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    cached: bool = False
    call_id: int | None = None
    error: str | None = None
    http_requests: int = 0
    cache_hits: int = 0


@dataclass(frozen=True)
class Reservation:
    """Money set aside by :meth:`Budget.reserve` for one call in flight."""

    id: int
    amount: float


class Budget:
    """A dollar limit shared by concurrent calls (thread- and task-safe).

    Before a call, :meth:`reserve` sets its worst-case cost aside, or raises
    :class:`~downsize.errors.BudgetExceeded` if ``spent + reserved + estimate`` would pass
    the limit; after it, :meth:`commit` records what it really cost (0 if it failed unpaid).

    Examples
    --------
    >>> b = Budget(1.0)
    >>> r = b.reserve(0.4)
    >>> b.commit(r, 0.25)
    >>> round(b.spent_usd, 2), round(b.remaining_usd, 2)
    (0.25, 0.75)
    """

    def __init__(self, limit_usd: float, spent_usd: float = 0.0) -> None:
        if limit_usd < 0:
            raise ValueError(f"limit_usd must be >= 0, got {limit_usd}")
        self.limit_usd = float(limit_usd)
        self.spent_usd = float(spent_usd)
        self.reserved_usd = 0.0
        self._open: dict[int, float] = {}
        self._next = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"Budget(limit_usd={self.limit_usd}, spent_usd={self.spent_usd:.6f}, "
            f"reserved_usd={self.reserved_usd:.6f})"
        )

    @property
    def remaining_usd(self) -> float:
        return self.limit_usd - self.spent_usd - self.reserved_usd

    def reserve(self, estimate: float) -> Reservation:
        """Set ``estimate`` dollars aside, or raise BudgetExceeded without doing so."""
        with self._lock:
            if self.spent_usd + self.reserved_usd + estimate > self.limit_usd + 1e-12:
                raise BudgetExceeded(
                    f"the next teacher call could cost up to ${estimate:.6f}, but ${self.spent_usd:.6f} "
                    f"is spent and ${self.reserved_usd:.6f} reserved of the ${self.limit_usd:.6f} budget"
                )
            self._next += 1
            self._open[self._next] = estimate
            self.reserved_usd += estimate
            return Reservation(self._next, estimate)

    def commit(self, reservation: Reservation, actual: float) -> None:
        """Release ``reservation`` and count ``actual`` dollars as spent (once)."""
        with self._lock:
            amount = self._open.pop(reservation.id, None)
            if amount is None:
                raise ValueError(f"reservation {reservation.id} was already committed")
            self.reserved_usd = max(0.0, self.reserved_usd - amount)
            self.spent_usd += actual


# ---------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------
def _retry_after_s(headers: httpx.Headers, *, now: datetime | None = None) -> float | None:
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


def _estimate_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """Prompt tokens, estimated as chars/4 per message plus 4 for the chat template."""
    return sum(math.ceil(len(_content_text(m.get("content"))) / 4) + 4 for m in messages)


def _rejects_response_format(exc: TeacherStatusError) -> bool:
    """An error that names response_format: the server does not take that kind of schema."""
    return "response_format" in exc.body


_NOT_JSON = object()


class _State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass
class _Outcome:
    """One labelled call: fresh or from the cache."""

    label: str | None
    raw: str
    error: str | None
    row: TeacherCall | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cached: bool
    http_requests: int
    latency_ms: float = 0.0  # the teacher's time for a fresh call (no queueing); 0 from the cache


# ---------------------------------------------------------------------------------
# the client
# ---------------------------------------------------------------------------------
class AsyncTeacher:
    """An OpenAI-compatible teacher.

    Parameters
    ----------
    base_url : str
        Ending in ``/v1``; requests go to ``{base_url}/chat/completions``.
    model : str
    api_key : str, optional
        Sent as ``Authorization: Bearer``; never shown.
    timeout : float
        Seconds per connect/read/write (a call that hangs longer is retried, then raises
        :class:`~downsize.errors.TeacherTimeout`).
    retry : RetryPolicy
    max_concurrency : int
        Requests in flight at once (an ``asyncio.Semaphore``; connection pool sized to match).
    price_per_1m_input, price_per_1m_output : float
        Dollars per million tokens, for :meth:`cost` and the :class:`Budget`.
    max_tokens : int
        Cap on the length of a label answer.
    structured_output : bool
        Send the label JSON schema as ``response_format`` (see ``_FORMAT_STYLES``).
    store : Store, optional
        Where paid calls are recorded and looked up (the cache). Without one, nothing is cached.
    transport : httpx.AsyncBaseTransport, optional
        Injected transport (tests).

    Examples
    --------
    >>> async def main():  # doctest: +SKIP
    ...     async with AsyncTeacher("http://127.0.0.1:8001/v1", model="replay") as t:
    ...         return await t.classify("...", task_name="tickets", task=task)
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy = RetryPolicy(),
        max_concurrency: int = 8,
        price_per_1m_input: float = 0.0,
        price_per_1m_output: float = 0.0,
        max_tokens: int = 64,
        structured_output: bool = True,
        store: Store | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self.retry = retry
        self.max_concurrency = max_concurrency
        self.price_per_1m_input = price_per_1m_input
        self.price_per_1m_output = price_per_1m_output
        self.max_tokens = max_tokens
        self.structured_output = structured_output
        self.store = store
        self._api_key = api_key or None
        self._url = f"{self.base_url}/chat/completions"
        self._sem = asyncio.Semaphore(max_concurrency)
        self._rng = random.Random()
        self._style = _FORMAT_STYLES[0]
        self._absent: set[str] = set()  # request hashes a prefetch found unrecorded
        self._state = _State.OPEN
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(
                max_connections=max_concurrency + 2, max_keepalive_connections=max_concurrency
            ),
            transport=transport,
            trust_env=False,
        )

    @classmethod
    def from_config(
        cls,
        cfg: TeacherConfig,
        *,
        store: Store | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> AsyncTeacher:
        """A teacher from a ``teachers.<name>`` config entry (the key is read from its env var)."""
        return cls(
            cfg.base_url,
            model=cfg.model,
            api_key=cfg.api_key(),
            timeout=cfg.timeout_s,
            retry=RetryPolicy(max_retries=cfg.max_retries),
            max_concurrency=cfg.max_concurrency,
            price_per_1m_input=cfg.price_per_1m_input,
            price_per_1m_output=cfg.price_per_1m_output,
            max_tokens=cfg.max_tokens,
            structured_output=cfg.structured_output,
            store=store,
            transport=transport,
        )

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"AsyncTeacher(base_url={self.base_url!r}, model={self.model!r}, api_key=<{key}>, {self._state.value})"

    # -- lifecycle -------------------------------------------------------------------
    async def __aenter__(self) -> AsyncTeacher:
        self._check_open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool; the teacher cannot be used afterwards."""
        if self._state is not _State.CLOSED:
            self._state = _State.CLOSED
            await self._client.aclose()

    def _check_open(self) -> None:
        if self._state is _State.CLOSED:
            raise RuntimeError("this AsyncTeacher is closed; create a new one")

    # -- money -----------------------------------------------------------------------
    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """Dollar cost of a call from its token counts and the configured prices."""
        return (input_tokens * self.price_per_1m_input + output_tokens * self.price_per_1m_output) / 1e6

    def worst_case_cost(self, messages: Sequence[dict[str, Any]], max_tokens: int | None = None) -> float:
        """What a call could cost at most: prompt tokens estimated as chars/4 (+4 per message
        for the chat template), plus a full ``max_tokens`` answer."""
        return self.cost(_estimate_tokens(messages), self.max_tokens if max_tokens is None else max_tokens)

    def request_hash(
        self,
        messages: Sequence[dict[str, Any]],
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """The content address of a request: sha256 of its canonical JSON."""
        key = {
            "base_url": self.base_url,
            "model": self.model,
            "messages": list(messages),
            "response_format": response_format,
            "max_tokens": max_tokens,
        }
        return hashlib.sha256(dumps(key).encode("utf-8")).hexdigest()

    # -- one logical call ------------------------------------------------------------
    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    async def chat(
        self,
        messages: list[dict[str, Any]],
        *,
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        **extra: Any,
    ) -> ChatResult:
        """Send one chat completion, retrying timeouts, connection errors, 429 and 5xx.

        ``extra`` holds any other OpenAI parameters (temperature, seed, tools...), passed
        through as they are; ``model`` is always the teacher's. ``max_tokens=None`` leaves
        the server's default.

        Raises
        ------
        TeacherTimeout
            No answer within ``timeout``, after all retries.
        TeacherStatusError
            An HTTP error: after all retries for 429/5xx, at once for other statuses
            (and for any rejection that names ``response_format``).
        TeacherError
            The server could not be reached, after all retries.
        TeacherResponseError
            A 2xx body that is not a chat completion.

        Each raised error carries ``attempts`` (HTTP requests made).
        """
        self._check_open()
        if extra.get("stream"):
            raise ValueError("AsyncTeacher.chat does not stream; drop stream=True")
        payload: dict[str, Any] = {**extra, "model": self.model, "messages": messages}
        if response_format is not None:
            payload["response_format"] = response_format
        if max_tokens is not None:
            payload["max_tokens"] = max_tokens
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        start = time.perf_counter()
        queued = 0.0  # time spent waiting for a concurrency slot: ours, not the teacher's
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            try:
                t_wait = time.perf_counter()
                async with self._sem:
                    queued += time.perf_counter() - t_wait
                    resp = await self._client.post(self._url, content=body)
            except httpx.TimeoutException as exc:
                reason = f"no answer within {self.timeout:g}s ({type(exc).__name__})"
                failure: TeacherError = TeacherTimeout(
                    f"teacher at {self.base_url}: {reason}, after {attempt} attempt(s)"
                )
            except _RETRYABLE_TRANSPORT as exc:
                reason = f"{type(exc).__name__}: {self._redact(str(exc)) or 'connection failed'}"
                failure = TeacherError(
                    f"cannot reach the teacher at {self.base_url}: {reason}, after {attempt} attempt(s)"
                )
            else:
                if resp.status_code < 300:
                    return self._result(resp, start + queued, attempt, messages)
                text = self._redact(resp.text)[:4000]
                reason = f"HTTP {resp.status_code}"
                failure = TeacherStatusError(
                    resp.status_code,
                    text,
                    f"teacher at {self.base_url} answered HTTP {resp.status_code} "
                    f"(after {attempt} attempt(s)): {text[:300]}",
                )
                retryable = resp.status_code == 429 or resp.status_code >= 500
                if not retryable or (response_format is not None and _rejects_response_format(failure)):
                    failure.attempts = attempt  # type: ignore[attr-defined]
                    raise failure
                retry_after = _retry_after_s(resp.headers)
            if attempt > self.retry.max_retries:
                failure.attempts = attempt  # type: ignore[attr-defined]
                raise failure
            delay = self.retry.delay(attempt, retry_after=retry_after, rng=self._rng)
            log.info(
                "teacher %s: %s; retry %d/%d in %.2fs",
                self.base_url, reason, attempt, self.retry.max_retries, delay,
            )
            await asyncio.sleep(delay)

    def _result(
        self, resp: httpx.Response, start: float, attempts: int, messages: Sequence[dict[str, Any]]
    ) -> ChatResult:
        latency_ms = (time.perf_counter() - start) * 1000.0
        try:
            data = resp.json()
        except ValueError:
            data = _NOT_JSON  # raised below, outside the handler: no chained decode error holding the body
        if data is _NOT_JSON:
            snippet = self._redact(resp.text)[:300]
            err = TeacherResponseError(
                f"teacher at {self.base_url} answered HTTP {resp.status_code} with a body that is not "
                f"JSON: {snippet!r}",
                raw=snippet,
            )
            err.attempts = attempts  # type: ignore[attr-defined]
            raise err
        choices = data.get("choices") if isinstance(data, dict) else None
        message = choices[0].get("message") if isinstance(choices, list) and choices and isinstance(choices[0], dict) else None
        if not isinstance(message, dict):
            snippet = self._redact(json.dumps(data))[:300]
            err = TeacherResponseError(
                f"teacher at {self.base_url} answered with JSON that is not a chat completion "
                f"(no choices[0].message): {snippet}",
                raw=snippet,
            )
            err.attempts = attempts  # type: ignore[attr-defined]
            raise err
        content = _content_text(message.get("content"))
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        try:
            input_tokens = int(usage.get("prompt_tokens") or 0)
            output_tokens = int(usage.get("completion_tokens") or 0)
        except (TypeError, ValueError):
            input_tokens = output_tokens = 0
        if not usage:  # a server that reports no usage: estimate rather than call it free
            input_tokens = _estimate_tokens(messages)
            output_tokens = max(1, math.ceil(len(content) / 4))
        return ChatResult(content, input_tokens, output_tokens, latency_ms, attempts, data)

    # -- labelling ---------------------------------------------------------------------
    def prefetch(self, texts: Sequence[str], *, task: TaskConfig) -> int:
        """Check the cache for many texts in a few queries; returns how many are recorded.

        :meth:`classify` then skips its per-call lookup for the texts found missing (once
        each). A labelling run calls this first: the lookups are a large share of its cost.
        If another process records the same request in between, it is paid twice (the
        store keeps the first record).
        """
        if self.store is None or not texts:
            return 0
        style = self._style if self.structured_output else "none"
        rf = _response_format(label_schema(task), style)
        keys = {self.request_hash(build_messages(task, t), rf, self.max_tokens) for t in texts}
        known = self.store.recorded_hashes(keys)
        self._absent |= keys - known
        return len(known)

    async def classify(
        self,
        text: str,
        *,
        task_name: str,
        task: TaskConfig,
        budget: Budget | None = None,
    ) -> TeacherAnswer:
        """Ask the teacher for the label of ``text``.

        Looks the request up in the store first (a hit costs nothing and makes no HTTP
        request); otherwise reserves its worst-case cost in ``budget``, calls, parses and
        records the call. An answer that is not one of the labels is recorded as
        ``parse_error`` and repaired once; the repair is cached under its own hash.

        Raises
        ------
        BudgetExceeded
            Before sending a call that could take the spend past the budget.
        TeacherError
            The call failed after retries (nothing is cached).
        """
        self._check_open()
        start = time.perf_counter()
        labels = list(task.labels)
        schema = label_schema(task)
        messages = build_messages(task, text)
        first = await self._labelled_call(messages, schema, labels, task_name, budget)
        outcomes = [first]
        if first.label is None:
            repair = messages + [
                {"role": "assistant", "content": first.raw[:2000]},
                {
                    "role": "user",
                    "content": (
                        "That answer is not one of the labels ("
                        + ", ".join(labels)
                        + "). Answer again with exactly one of them and nothing else."
                    ),
                },
            ]
            outcomes.append(await self._labelled_call(repair, schema, labels, task_name, budget))
        last = outcomes[-1]
        return TeacherAnswer(
            label=last.label,
            raw=last.raw,
            status="ok" if last.label is not None else "parse_error",
            input_tokens=sum(o.input_tokens for o in outcomes),
            output_tokens=sum(o.output_tokens for o in outcomes),
            cost_usd=sum(o.cost_usd for o in outcomes),
            # the teacher's own time (queueing for a concurrency slot excluded); a cache hit's lookup time
            latency_ms=(
                (time.perf_counter() - start) * 1000.0
                if all(o.cached for o in outcomes)
                else sum(o.latency_ms for o in outcomes)
            ),
            cached=all(o.cached for o in outcomes),
            call_id=last.row.id if last.row is not None else None,
            error=last.error,
            http_requests=sum(o.http_requests for o in outcomes),
            cache_hits=sum(o.cached for o in outcomes),
        )

    async def _labelled_call(
        self,
        messages: list[dict[str, Any]],
        schema: dict[str, Any],
        labels: list[str],
        task_name: str,
        budget: Budget | None,
    ) -> _Outcome:
        rejected = 0  # HTTP requests answered "response_format not supported"
        while True:
            style = self._style if self.structured_output else "none"
            rf = _response_format(schema, style)
            key = self.request_hash(messages, rf, self.max_tokens)
            if self.store is not None:
                if key in self._absent:  # prefetch found it missing: skip the lookup, once
                    self._absent.discard(key)
                elif (row := self.store.cached_call(key)) is not None:
                    return self._from_cache(row, labels, rejected)
            reservation = budget.reserve(self.worst_case_cost(messages)) if budget is not None else None
            try:
                result = await self.chat(messages, response_format=rf, max_tokens=self.max_tokens)
            except BaseException as exc:
                _settle(budget, reservation, 0.0)  # failed calls are not paid
                if rf is not None and isinstance(exc, TeacherStatusError) and _rejects_response_format(exc):
                    rejected += 1
                    self._step_down(style, exc.status)
                    continue
                if isinstance(exc, TeacherError):
                    exc.attempts = getattr(exc, "attempts", 1) + rejected  # type: ignore[attr-defined]
                raise
            cost = self.cost(result.input_tokens, result.output_tokens)
            _settle(budget, reservation, cost)
            label = parse_label(result.content, labels)
            error = None if label is not None else _not_a_label(result.content, labels)
            row = None
            if self.store is not None:
                row = self.store.record_call(
                    TeacherCall(
                        request_hash=key,
                        base_url=self.base_url,
                        model=self.model,
                        task=task_name,
                        prompt=messages,
                        schema_json=rf,
                        raw_response=result.content,
                        parsed_label=label,
                        input_tokens=result.input_tokens,
                        output_tokens=result.output_tokens,
                        cost_usd=cost,
                        latency_ms=result.latency_ms,
                        status="ok" if label is not None else "parse_error",
                        error=error,
                        attempts=result.attempts,
                    )
                )
            return _Outcome(
                label, result.content, error, row, result.input_tokens, result.output_tokens, cost,
                False, result.attempts + rejected, result.latency_ms,
            )

    def _step_down(self, style: str, status: int) -> None:
        """The server rejected ``style`` of response_format: use the next one from now on."""
        if self._style == style:  # not already stepped down by a concurrent call
            self._style = _FORMAT_STYLES[_FORMAT_STYLES.index(style) + 1]
            log.info(
                "teacher %s rejected response_format type %r (HTTP %d); using %r from now on",
                self.base_url, style, status, self._style,
            )

    def _from_cache(self, row: TeacherCall, labels: list[str], http_requests: int) -> _Outcome:
        label = row.parsed_label if row.parsed_label in labels else None
        raw = row.raw_response or ""
        error = None if label is not None else (row.error or _not_a_label(raw, labels))
        return _Outcome(
            label, raw, error, row,
            row.input_tokens, row.output_tokens, 0.0, http_requests == 0, http_requests,
        )


def _settle(budget: Budget | None, reservation: Reservation | None, amount: float) -> None:
    if budget is not None and reservation is not None:
        budget.commit(reservation, amount)


def _not_a_label(raw: str, labels: Sequence[str]) -> str:
    shown = raw if len(raw) <= 120 else raw[:117] + "..."
    return f"answer {shown!r} is not exactly one of the labels ({', '.join(labels)})"
