"""The teacher client: :class:`AsyncTeacher`, for any OpenAI-compatible ``/v1/chat/completions``.

:meth:`AsyncTeacher.chat` makes one logical call with bounded retries (:mod:`.retry`: timeouts,
connection errors, 429 and 5xx only; exponential backoff with full jitter; ``Retry-After``
honoured). :meth:`AsyncTeacher.ask` asks for a task's answer through its JSON schema, parses it
strictly with the task kind's parser, repairs one bad answer, records every paid call in the
store under the hash of everything that determines it (:mod:`.cache`: nothing is paid for twice)
and keeps within a dollar :class:`~downsize.teacher.budget.Budget`.

The API key is sent in the ``Authorization`` header only: it is never part of an
exception, a ``repr`` or a log line (error bodies are redacted in case a server echoes it).
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import httpx

from ..config import TeacherConfig
from ..errors import AnswerError, TeacherError, TeacherStatusError, TeacherTimeout
from ..store import BUSY, RECLAIMED, RECORDED, Store, TeacherCall
from ..tasks import TaskConfig
from .answer import Outcome, TeacherAnswer, from_cache, parse_answer
from .budget import Budget, Reservation
from .cache import CallCache, CallInFlight, request_hash
from .completion import ChatResult, estimate_tokens, read_completion
from .prompt import FORMAT_STYLES, build_messages, response_format
from .retry import RETRYABLE_TRANSPORT, RetryPolicy, retry_after_s

__all__ = ["ChatResult", "TeacherAnswer", "AsyncTeacher"]

log = logging.getLogger("downsize.teacher")


def _rejects_response_format(exc: TeacherStatusError) -> bool:
    """An error that names response_format: the server does not take that kind of schema."""
    return "response_format" in exc.body


class _State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


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
        Cap on the length of an answer.
    structured_output : bool
        Send the answer's JSON schema as ``response_format`` (see :data:`~downsize.teacher.prompt.FORMAT_STYLES`).
    store : Store, optional
        Where paid calls are recorded and looked up (the cache). Without one, nothing is cached.
    transport : httpx.AsyncBaseTransport, optional
        Injected transport (tests).

    Examples
    --------
    >>> async def main():  # doctest: +SKIP
    ...     async with AsyncTeacher("http://127.0.0.1:8001/v1", model="replay") as t:
    ...         return await t.ask("...", task_name="tickets", task=task)
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
        self._style = FORMAT_STYLES[0]
        # a claim outlives the longest a call can take (every attempt timing out in each phase,
        # plus the backoffs) with a margin: only then may another process take it over
        lease_s = (retry.max_retries + 1) * 3 * timeout + retry.max_retries * retry.backoff_max_s + 60.0
        self.cache = CallCache(store, lease_s=lease_s)
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
            self.cache.release_all()  # a claim left by a call cancelled mid-way must not block others

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
        return self.cost(estimate_tokens(messages), self.max_tokens if max_tokens is None else max_tokens)

    def request_hash(
        self,
        messages: Sequence[dict[str, Any]],
        response_format: dict[str, Any] | None = None,
        max_tokens: int | None = None,
    ) -> str:
        """The content address of a request (see :func:`~downsize.teacher.cache.request_hash`)."""
        return request_hash(self.base_url, self.model, messages, response_format, max_tokens)

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
            except RETRYABLE_TRANSPORT as exc:
                reason = f"{type(exc).__name__}: {self._redact(str(exc)) or 'connection failed'}"
                failure = TeacherError(
                    f"cannot reach the teacher at {self.base_url}: {reason}, after {attempt} attempt(s)"
                )
            else:
                if resp.status_code < 300:
                    return read_completion(resp, start + queued, attempt, messages, base_url=self.base_url,
                                           redact=self._redact)
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
                retry_after = retry_after_s(resp.headers)
            if attempt > self.retry.max_retries:
                failure.attempts = attempt  # type: ignore[attr-defined]
                raise failure
            delay = self.retry.delay(attempt, retry_after=retry_after, rng=self._rng)
            log.info(
                "teacher %s: %s; retry %d/%d in %.2fs",
                self.base_url, reason, attempt, self.retry.max_retries, delay,
            )
            await asyncio.sleep(delay)

    # -- asking for a task's answer -------------------------------------------------------
    def _format(self, task: TaskConfig) -> dict[str, Any] | None:
        return response_format(task.answer_schema(), self._style if self.structured_output else "none")

    def prefetch(self, texts: Sequence[str], *, task: TaskConfig) -> int:
        """Check the cache for many texts in a few queries; returns how many are recorded.

        :meth:`ask` then skips its per-call lookup for the texts found missing (once each). A
        labelling run calls this first: the lookups are a large share of its cost.
        """
        if not self.cache or not texts:
            return 0
        rf = self._format(task)
        return self.cache.prefetch(self.request_hash(build_messages(task, t), rf, self.max_tokens) for t in texts)

    async def ask(self, text: str, *, task_name: str, task: TaskConfig, budget: Budget | None = None,
                  wait: bool = True) -> TeacherAnswer:
        """Ask the teacher for the task's answer for ``text``.

        Looks the request up in the store first (a hit costs nothing and makes no HTTP
        request); otherwise reserves its worst-case cost in ``budget``, claims the request in
        the store (a request another live caller has claimed is waited for, and then answered
        from its record: never paid twice), calls, parses (the kind's strict
        :meth:`~downsize.tasks.TaskConfig.parse`) and records the call. An unusable answer is
        recorded as ``parse_error`` and repaired once; the repair is cached under its own hash.
        ``wait=False`` raises :class:`~downsize.teacher.cache.CallInFlight` instead of waiting
        for another caller's first call.

        Raises
        ------
        BudgetExceeded
            Before sending a call that could take the spend past the budget.
        TeacherError
            The call failed after retries (nothing is cached).
        """
        self._check_open()
        start = time.perf_counter()
        messages = build_messages(task, text)
        first = await self._answer_call(messages, text, task, task_name, budget, wait=wait)
        outcomes = [first]
        if first.answer is None:
            repair = messages + [
                {"role": "assistant", "content": first.raw[:2000]},
                {"role": "user", "content": task.repair_message(AnswerError(first.error or "not a valid answer"))},
            ]
            outcomes.append(await self._answer_call(repair, text, task, task_name, budget))
        last = outcomes[-1]
        return TeacherAnswer(
            answer=last.answer,
            raw=last.raw,
            status="ok" if last.answer is not None else "parse_error",
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
            reclaimed=sum(o.reclaimed for o in outcomes),
            by_other=last.by_other,
        )

    async def _answer_call(self, messages: list[dict[str, Any]], text: str, task: TaskConfig, task_name: str,
                           budget: Budget | None, *, wait: bool = True) -> Outcome:
        rejected = 0  # HTTP requests answered "response_format not supported"
        polls = 0  # waits for another caller's claim
        other = False  # answered from what another live caller recorded while we asked
        while True:
            style = self._style if self.structured_output else "none"
            rf = self._format(task)
            key = self.request_hash(messages, rf, self.max_tokens)
            row = await self.cache.get(key)
            if row is not None:
                out = from_cache(row, task, text, rejected)
                out.by_other = other
                return out
            estimate = self.worst_case_cost(messages)
            reservation = budget.reserve(estimate) if budget is not None else None
            try:
                state = await self.cache.claim(key, reserve_usd=estimate, budget=budget, task=task_name)
            except BaseException:
                _settle(budget, reservation, 0.0)
                raise
            if state in (RECORDED, BUSY):  # answered from the record, now or once its caller is done
                _settle(budget, reservation, 0.0)
                other = True
                if state == BUSY:
                    if not wait:
                        raise CallInFlight(key)
                    await asyncio.sleep(min(0.5, 0.02 * 2 ** min(polls, 5)))
                    polls += 1
                continue
            try:
                result = await self.chat(messages, response_format=rf, max_tokens=self.max_tokens)
            except BaseException as exc:
                # failed calls are not paid; a cancelled one may have reached the teacher
                self.cache.release(key, abandoned=not isinstance(exc, Exception))
                _settle(budget, reservation, 0.0)
                if rf is not None and isinstance(exc, TeacherStatusError) and _rejects_response_format(exc):
                    rejected += 1
                    self._step_down(style, exc.status)
                    continue
                if isinstance(exc, TeacherError):
                    exc.attempts = getattr(exc, "attempts", 1) + rejected  # type: ignore[attr-defined]
                raise
            cost = self.cost(result.input_tokens, result.output_tokens)
            _settle(budget, reservation, cost)
            answer, error = parse_answer(task, result.content, text)
            row = await self.cache.record(TeacherCall(
                request_hash=key, base_url=self.base_url, model=self.model, task=task_name, prompt=messages,
                schema_json=rf, raw_response=result.content,
                parsed_label=None if answer is None else task.encode(answer),
                input_tokens=result.input_tokens, output_tokens=result.output_tokens, cost_usd=cost,
                latency_ms=result.latency_ms, status="ok" if answer is not None else "parse_error", error=error,
                attempts=result.attempts,
            ))
            return Outcome(answer, result.content, error, row, result.input_tokens, result.output_tokens, cost,
                            False, result.attempts + rejected, result.latency_ms, reclaimed=state == RECLAIMED)

    def _step_down(self, style: str, status: int) -> None:
        """The server rejected ``style`` of response_format: use the next one from now on."""
        if self._style == style:  # not already stepped down by a concurrent call
            self._style = FORMAT_STYLES[FORMAT_STYLES.index(style) + 1]
            log.info(
                "teacher %s rejected response_format type %r (HTTP %d); using %r from now on",
                self.base_url, style, status, self._style,
            )


def _settle(budget: Budget | None, reservation: Reservation | None, amount: float) -> None:
    if budget is not None and reservation is not None:
        budget.commit(reservation, amount)
