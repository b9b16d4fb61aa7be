"""The teacher client against real HTTP servers on loopback: the replay teacher and a
scripted fault server (tests/conftest.py), plus parsing, budget and retry arithmetic."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from downsize.config import ClassifyTask, TeacherConfig
from downsize.errors import (
    BudgetExceeded,
    TeacherError,
    TeacherResponseError,
    TeacherStatusError,
    TeacherTimeout,
)
from downsize.replay.run import _free_port
from downsize.store import TeacherCall
from downsize.tasks import parse_label
from downsize.teacher import AsyncTeacher, Budget, RetryPolicy, build_messages
from downsize.teacher.retry import retry_after_s as _retry_after_s

FAST = RetryPolicy(max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05)
PATIENT = RetryPolicy(max_retries=3, backoff_base_s=0.01, backoff_max_s=5.0)  # lets Retry-After through
LABELS = ["billing", "technical", "account"]
TASK = ClassifyTask(
    instructions="Route the support ticket.",
    labels={"billing": "invoices, refunds", "technical": "bugs, outages", "account": "login, profile"},
)
MSGS = [{"role": "user", "content": "hello"}]


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def _chat(base_url: str, messages=MSGS, **kw):  # type: ignore[no-untyped-def]
    opts = {"retry": FAST, "timeout": 5.0, **kw}
    async with AsyncTeacher(base_url, model="m", **opts) as t:
        return await t.chat(messages)


def _calls(store) -> list[TeacherCall]:  # type: ignore[no-untyped-def]
    with store.session() as s:
        return list(s.scalars(select(TeacherCall).order_by(TeacherCall.id)))


# ------------------------------------------------------------------------------------
# parse_label
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"label": "billing"}', "billing"),
        ('{"label":"technical"}', "technical"),
        ('```json\n{"label": "account"}\n```', "account"),
        ("```\nbilling\n```", "billing"),
        ('Sure! Here it is: {"label": "technical"}', "technical"),
        ('"billing"', "billing"),
        ("'billing'", "billing"),
        ("billing", "billing"),
        ("  Billing.\n", "billing"),
        ("TECHNICAL", "technical"),
        ("**account**", "account"),
        ("Label: account", "account"),
        ("label = technical", "technical"),
        ("Answer: Billing!", "billing"),
        ("The label is: technical", "technical"),
        ('{"Label": "ACCOUNT"}', "account"),
        # no label, or more than one: never a guess
        ("", None),
        ("   ", None),
        ("billing or technical", None),
        ("billing, technical", None),
        ("I think it is about a refund", None),
        ('{"label": "refunds"}', None),
        ('{"label": "billing technical"}', None),
        ('{"category": "billing"}', None),
        ("not billing", None),
        ("null", None),
        ("[]", None),
    ],
)
def test_parse_label_cases(raw: str, expected: str | None) -> None:
    assert parse_label(raw, LABELS) == expected


def test_parse_label_punctuation_and_case_variants_of_a_label() -> None:
    labels = ["money-fx", "earn", "acq"]
    for raw in ("money-fx", "Money FX", "money_fx", "MONEY-FX.", '{"label": "moneyfx"}'):
        assert parse_label(raw, labels) == "money-fx"


def test_parse_label_labels_that_collide_when_normalised_are_ambiguous() -> None:
    # an exact spelling names its label; a spelling that only normalises to several is ambiguous
    assert parse_label("a-b", ["a-b", "ab"]) == "a-b"
    assert parse_label("A_B", ["a-b", "ab"]) is None
    assert parse_label("A B.", ["a-b", "ab"]) is None
    assert parse_label("c", ["a-b", "ab", "c"]) == "c"


@settings(max_examples=300, deadline=None)
@given(
    raw=st.text(max_size=60),
    labels=st.lists(st.text(min_size=1, max_size=12).filter(str.strip), min_size=1, max_size=6, unique=True),
)
def test_parse_label_never_returns_a_label_outside_the_set(raw: str, labels: list[str]) -> None:
    got = parse_label(raw, labels)
    assert got is None or got in labels


@settings(max_examples=200, deadline=None)
@given(labels=st.lists(st.from_regex(r"[A-Za-z][A-Za-z0-9 _-]{0,14}", fullmatch=True), min_size=2, max_size=6, unique=True),
       data=st.data())
def test_parse_label_round_trips_every_distinct_label(labels: list[str], data: st.DataObject) -> None:
    from downsize.tasks.classify import _norm

    keys = [_norm(x) for x in labels]
    lab = data.draw(st.sampled_from(labels))
    # spelt exactly, a label is always recovered, even when another one normalises the same
    assert parse_label(lab, labels) == lab
    assert parse_label(json.dumps({"label": lab}), labels) == lab
    # spelt differently (case and punctuation), only a label whose normalised form is unique is
    variant = lab.swapcase().replace(" ", "_")
    casefold_hits = [x for x in labels if " ".join(x.casefold().split()) == " ".join(variant.casefold().split())]
    if variant in labels:
        expected: str | None = variant
    elif casefold_hits:
        expected = casefold_hits[0] if len(casefold_hits) == 1 else None
    else:
        expected = lab if keys.count(_norm(lab)) == 1 else None
    assert parse_label(variant, labels) == expected
    assert parse_label(f"Label: {lab}", labels) in (lab, None)


# ------------------------------------------------------------------------------------
# prompt, schema, small value classes
# ------------------------------------------------------------------------------------
def test_build_messages_puts_exactly_the_text_in_the_user_message() -> None:
    text = "  My invoice is wrong.\nPlease refund!  "
    msgs = build_messages(TASK, text)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[1]["content"] == text
    system = msgs[0]["content"]
    assert "Route the support ticket." in system
    for name, desc in TASK.labels.items():
        assert f"- {name}: {desc}" in system
    assert "exactly one label" in system


def test_label_schema_enumerates_the_labels() -> None:
    schema = TASK.answer_schema()
    assert schema["properties"]["label"]["enum"] == LABELS
    assert schema["required"] == ["label"] and schema["additionalProperties"] is False


def test_retry_policy_full_jitter_and_caps() -> None:
    p = RetryPolicy(backoff_base_s=0.5, backoff_max_s=3.0)
    for retry, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        delays = [p.delay(retry) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.7  # jitter spans the range
    assert RetryPolicy(jitter=False, backoff_base_s=0.5).delay(3) == 2.0
    assert p.delay(1, retry_after=10.0) == 3.0  # Retry-After is capped by backoff_max_s
    assert p.delay(1, retry_after=1.5) == 1.5
    with pytest.raises(TypeError):
        RetryPolicy(3)  # type: ignore[misc]  # keyword-only


def test_retry_after_header_forms() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    date = format_datetime(now + timedelta(seconds=7), usegmt=True)
    assert _retry_after_s(httpx.Headers({"Retry-After": "3"})) == 3.0
    assert _retry_after_s(httpx.Headers({"Retry-After": "1.5"})) == 1.5
    assert _retry_after_s(httpx.Headers({"Retry-After": date}), now=now) == 7.0
    assert _retry_after_s(httpx.Headers({"Retry-After": format_datetime(now - timedelta(seconds=5), usegmt=True)}), now=now) == 0.0
    assert _retry_after_s(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    assert _retry_after_s(httpx.Headers({"Retry-After": "soon"})) is None
    assert _retry_after_s(httpx.Headers({})) is None


def test_budget_reserve_commit_and_refusal() -> None:
    b = Budget(1.0)
    r1 = b.reserve(0.6)
    with pytest.raises(BudgetExceeded, match=r"\$0\.500000.*\$1\.000000 budget"):
        b.reserve(0.5)  # 0.6 reserved + 0.5 > 1.0
    b.commit(r1, 0.2)
    assert b.spent_usd == pytest.approx(0.2) and b.reserved_usd == pytest.approx(0.0)
    r2 = b.reserve(0.8)
    b.commit(r2, 0.0)
    with pytest.raises(ValueError):
        b.commit(r2, 0.1)  # committed twice
    assert Budget(1.0, spent_usd=0.9).remaining_usd == pytest.approx(0.1)


def test_budget_is_thread_safe() -> None:
    b = Budget(10.0)
    granted: list[int] = []

    def spend() -> None:
        for _ in range(2000):
            try:
                r = b.reserve(0.01)
            except BudgetExceeded:
                continue
            granted.append(1)
            b.commit(r, 0.01)

    threads = [threading.Thread(target=spend) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.spent_usd <= 10.0 + 1e-9
    assert len(granted) == 1000  # exactly limit / cost calls were allowed
    assert b.reserved_usd == pytest.approx(0.0, abs=1e-9)


# ------------------------------------------------------------------------------------
# chat: retries, timeouts, errors (real HTTP, fault server)
# ------------------------------------------------------------------------------------
def test_chat_returns_content_tokens_and_raw(fault_server) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"content": "hi there"})
    res = run(_chat(plan.base_url))
    assert res.content == "hi there" and res.attempts == 1
    assert res.input_tokens >= 1 and res.output_tokens >= 1
    assert res.raw["object"] == "chat.completion" and res.latency_ms > 0


def test_chat_retries_5xx_then_succeeds(fault_server) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"status": 500, "body": "boom"}, {"status": 503}, {"content": "ok"})
    res = run(_chat(plan.base_url))
    assert res.content == "ok" and res.attempts == 3 and plan.count == 3


def test_chat_gives_up_after_max_retries(fault_server) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"status": 502, "body": "bad gateway"})
    with pytest.raises(TeacherStatusError) as ei:
        run(_chat(plan.base_url))
    assert ei.value.status == 502 and "bad gateway" in ei.value.body
    assert plan.count == FAST.max_retries + 1 and ei.value.attempts == FAST.max_retries + 1


def test_chat_honours_retry_after_seconds(fault_server) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"status": 429, "headers": {"Retry-After": "1"}}, {"content": "ok"})
    t0 = time.perf_counter()
    res = run(_chat(plan.base_url, retry=PATIENT))
    elapsed = time.perf_counter() - t0
    assert res.content == "ok" and plan.count == 2
    assert 0.95 <= elapsed < 3.0  # waited the server's second, not the 10 ms backoff


def test_chat_honours_retry_after_http_date(fault_server) -> None:  # type: ignore[no-untyped-def]
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=2), usegmt=True)
    plan = fault_server.plan({"status": 503, "headers": {"Retry-After": when}}, {"content": "ok"})
    t0 = time.perf_counter()
    assert run(_chat(plan.base_url, retry=PATIENT)).content == "ok"
    assert 0.9 <= time.perf_counter() - t0 < 3.5  # a date has 1 s resolution


def test_retry_after_is_capped_by_backoff_max(fault_server) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"status": 429, "headers": {"Retry-After": "30"}}, {"content": "ok"})
    t0 = time.perf_counter()
    assert run(_chat(plan.base_url)).content == "ok"
    assert time.perf_counter() - t0 < 1.0  # capped at backoff_max_s = 0.05


def test_chat_timeout_raises_teacher_timeout_after_retries(fault_server) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"sleep": 3.0, "content": "too late"})
    t0 = time.perf_counter()
    with pytest.raises(TeacherTimeout, match="did not answer|no answer within 0.3s") as ei:
        run(_chat(plan.base_url, timeout=0.3, retry=RetryPolicy(max_retries=1, backoff_base_s=0.01)))
    elapsed = time.perf_counter() - t0
    assert plan.count == 2 and ei.value.attempts == 2
    assert 0.55 <= elapsed < 2.0


def test_non_retryable_4xx_is_raised_at_once(fault_server) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"status": 400, "body": {"error": {"message": "bad request"}}})
    with pytest.raises(TeacherStatusError) as ei:
        run(_chat(plan.base_url))
    assert ei.value.status == 400 and plan.count == 1 and "bad request" in ei.value.body


def test_body_that_is_not_json_is_a_response_error(fault_server) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"status": 200, "body": "<html>oops</html>"})
    with pytest.raises(TeacherResponseError, match="not JSON"):
        run(_chat(plan.base_url))
    assert plan.count == 1


def test_json_that_is_not_a_chat_completion_is_a_response_error(fault_server) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"status": 200, "body": {"object": "list", "data": []}})
    with pytest.raises(TeacherResponseError, match="not a chat completion"):
        run(_chat(plan.base_url))


def test_connection_refused_is_retried_then_a_teacher_error() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(TeacherError, match="cannot reach the teacher") as ei:
        run(_chat(url, retry=RetryPolicy(max_retries=2, backoff_base_s=0.01)))
    assert ei.value.attempts == 3


def test_chat_passes_extra_parameters_through_with_the_teachers_model(fault_server) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"content": "ok"})

    async def go() -> None:
        async with AsyncTeacher(plan.base_url, model="big-model") as t:
            await t.chat(MSGS, max_tokens=7, temperature=0.0, seed=3, model="ignored", tools=[{"type": "function"}])
            await t.chat(MSGS)

    run(go())
    first, second = plan.requests
    assert first["model"] == "big-model" and first["max_tokens"] == 7
    assert first["temperature"] == 0.0 and first["seed"] == 3 and first["tools"] == [{"type": "function"}]
    assert "max_tokens" not in second and "response_format" not in second


def test_chat_refuses_streaming(fault_server) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"content": "ok"})
    with pytest.raises(ValueError, match="stream"):
        run(AsyncTeacher(plan.base_url, model="m").chat(MSGS, stream=True))


def test_concurrency_is_bounded_by_max_concurrency(fault_server) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"sleep": 0.1, "content": "ok"})

    async def go() -> None:
        async with AsyncTeacher(plan.base_url, model="m", max_concurrency=3) as t:
            await asyncio.gather(*(t.chat(MSGS) for _ in range(12)))

    run(go())
    assert plan.count == 12 and plan.max_in_flight == 3


def test_api_key_never_appears_in_errors_reprs_or_logs(fault_server, caplog, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    key = "sk-test-SECRET-1234567890"
    caplog.set_level(logging.DEBUG)
    plan = fault_server.plan({"status": 500, "echo_auth": True}, {"status": 401, "echo_auth": True})

    async def go() -> AsyncTeacher:
        t = AsyncTeacher(plan.base_url, model="m", api_key=key, retry=FAST)
        try:
            with pytest.raises(TeacherStatusError) as ei:
                await t.chat(MSGS)
        finally:
            await t.aclose()
        exc = ei.value
        for text in (str(exc), repr(exc), exc.body, repr(exc.args), repr(t)):
            assert key not in text
        assert "***" in exc.body  # the echoed key was redacted
        return t

    run(go())
    assert plan.headers[0]["authorization"] == f"Bearer {key}"  # it was sent...
    assert "HTTP 500; retry 1/3" in caplog.text and key not in caplog.text  # ...and never logged

    echo = fault_server.plan({"status": 200, "body": f"not json, but your key: {key}"})

    async def not_json() -> None:
        async with AsyncTeacher(echo.base_url, model="m", api_key=key) as t:
            with pytest.raises(TeacherResponseError) as ei:
                await t.chat(MSGS)
        assert key not in str(ei.value) and key not in ei.value.raw and "***" in ei.value.raw
        assert ei.value.__context__ is None and ei.value.__cause__ is None  # no chained httpx/json error

    run(not_json())

    monkeypatch.setenv("MY_TEACHER_KEY", key)
    cfg = TeacherConfig(base_url=plan.base_url, model="m", api_key_env="MY_TEACHER_KEY")
    t = AsyncTeacher.from_config(cfg)
    assert key not in repr(t) and "api_key=<set>" in repr(t)
    run(t.aclose())


def test_from_config_and_lifecycle(fault_server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"content": "ok"})
    monkeypatch.setenv("K", "abc")
    cfg = TeacherConfig(base_url=plan.base_url, model="m", api_key_env="K", price_per_1m_input=2.5,
                        price_per_1m_output=10, max_concurrency=5, timeout_s=7, max_retries=2, max_tokens=16,
                        structured_output=False)
    t = AsyncTeacher.from_config(cfg)
    assert (t.max_concurrency, t.timeout, t.retry.max_retries, t.max_tokens, t.structured_output) == (5, 7, 2, 16, False)
    assert t.cost(1_000_000, 100_000) == pytest.approx(3.5) == cfg.cost(1_000_000, 100_000)

    async def go() -> None:
        async with t:
            await t.chat(MSGS)
        with pytest.raises(RuntimeError, match="closed"):
            await t.chat(MSGS)

    run(go())
    assert plan.headers[0]["authorization"] == "Bearer abc"


# ------------------------------------------------------------------------------------
# classify: structured output, repair, cache, budget, format fallback
# ------------------------------------------------------------------------------------
def _teacher(url: str, store=None, **kw) -> AsyncTeacher:  # type: ignore[no-untyped-def]
    opts = {"retry": FAST, "price_per_1m_input": 2.5, "price_per_1m_output": 10.0, "store": store, **kw}
    return AsyncTeacher(url, model="m", **opts)


async def _classify(t: AsyncTeacher, text: str, task: ClassifyTask = TASK, name: str = "tickets", **kw):  # type: ignore[no-untyped-def]
    async with t:
        return await t.ask(text, task_name=name, task=task, **kw)


def test_classify_sends_the_label_schema_and_records_the_call(fault_server, tmp_store) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"content": '{"label": "billing"}'})
    ans = run(_classify(_teacher(plan.base_url, tmp_store), "I was charged twice"))
    assert (ans.answer, ans.status, ans.cached, ans.http_requests) == ("billing", "ok", False, 1)
    assert ans.cost_usd > 0 and ans.input_tokens > 0 and ans.output_tokens > 0
    sent = plan.requests[0]
    assert sent["messages"][1] == {"role": "user", "content": "I was charged twice"}
    assert sent["max_tokens"] == 64
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "label", "strict": True, "schema": TASK.answer_schema()},
    }
    (row,) = _calls(tmp_store)
    assert (row.id, row.status, row.parsed_label, row.task) == (ans.call_id, "ok", "billing", "tickets")
    assert row.cost_usd == pytest.approx(ans.cost_usd) and row.prompt == sent["messages"]


def test_classify_repairs_one_bad_answer(fault_server, tmp_store) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"content": "It is about money, I think"}, {"content": "Billing"})
    ans = run(_classify(_teacher(plan.base_url, tmp_store, structured_output=False), "refund please"))
    assert (ans.answer, ans.status, ans.http_requests) == ("billing", "ok", 2)
    repair = plan.requests[1]["messages"]
    assert repair[1] == {"role": "user", "content": "refund please"}  # the text is still the first user message
    assert repair[2] == {"role": "assistant", "content": "It is about money, I think"}
    assert repair[3]["role"] == "user" and "not one of the labels" in repair[3]["content"]
    first, second = _calls(tmp_store)
    assert (first.status, first.parsed_label) == ("parse_error", None)
    assert (second.status, second.parsed_label, second.id) == ("ok", "billing", ans.call_id)
    assert ans.cost_usd == pytest.approx(first.cost_usd + second.cost_usd)

    # a re-run pays for nothing twice: both calls come from the cache
    again = run(_classify(_teacher(plan.base_url, tmp_store, structured_output=False), "refund please"))
    assert (again.answer, again.cached, again.cost_usd, again.cache_hits) == ("billing", True, 0.0, 2)
    assert plan.count == 2


@pytest.mark.parametrize("bad", ["banana", '{"label": "refunds"}', "billing or technical", ""])
def test_classify_never_returns_or_stores_a_label_outside_the_set(fault_server, tmp_store, bad) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"content": bad})
    ans = run(_classify(_teacher(plan.base_url, tmp_store), "???"))
    assert (ans.answer, ans.status) == (None, "parse_error") and ans.error
    assert plan.count == 2  # the answer and one repair, no more
    rows = _calls(tmp_store)
    assert [r.status for r in rows] == ["parse_error", "parse_error"]
    assert all(r.parsed_label is None for r in rows)


def test_cache_hit_makes_no_http_request(replay_teacher, reuters_records, r8_task, tmp_store) -> None:  # type: ignore[no-untyped-def]
    text, label = next(iter(reuters_records.items()))
    first = run(_classify(_teacher(replay_teacher.base_url, tmp_store), text, r8_task, "news"))
    assert (first.answer, first.cached) == (label, False)
    assert replay_teacher.stats["requests"] == 1
    second = run(_classify(_teacher(replay_teacher.base_url, tmp_store), text, r8_task, "news"))
    assert (second.answer, second.cached, second.cost_usd, second.http_requests) == (label, True, 0.0, 0)
    assert second.call_id == first.call_id
    assert second.input_tokens == first.input_tokens  # the answer's tokens, though nothing was paid
    assert replay_teacher.stats["requests"] == 1  # the server never saw the second call


def test_cache_key_covers_model_and_max_tokens(replay_teacher, reuters_records, r8_task, tmp_store) -> None:  # type: ignore[no-untyped-def]
    text = next(iter(reuters_records))
    run(_classify(_teacher(replay_teacher.base_url, tmp_store), text, r8_task, "news"))
    run(_classify(_teacher(replay_teacher.base_url, tmp_store, max_tokens=32), text, r8_task, "news"))
    run(_classify(AsyncTeacher(replay_teacher.base_url, model="other", store=tmp_store), text, r8_task, "news"))
    assert replay_teacher.stats["requests"] == 3
    t = _teacher(replay_teacher.base_url)
    assert t.request_hash(MSGS, None, 64) == _teacher(replay_teacher.base_url + "/").request_hash(MSGS, None, 64)
    assert t.request_hash(MSGS, None, 64) != t.request_hash(MSGS, {"type": "json_object"}, 64)
    run(t.aclose())


def test_http_failures_are_not_cached(fault_server, tmp_store) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"status": 500}, {"content": '{"label": "account"}'})
    with pytest.raises(TeacherStatusError):
        run(_classify(_teacher(plan.base_url, tmp_store, retry=RetryPolicy(max_retries=0)), "reset my password"))
    assert _calls(tmp_store) == []
    ans = run(_classify(_teacher(plan.base_url, tmp_store), "reset my password"))
    assert (ans.answer, ans.cached) == ("account", False) and plan.count == 2


def test_budget_refuses_before_sending(fault_server, tmp_store) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"content": '{"label": "billing"}'})
    t = _teacher(plan.base_url, tmp_store, price_per_1m_input=1000.0, price_per_1m_output=1000.0)
    worst = t.worst_case_cost(build_messages(TASK, "x" * 400))
    budget = Budget(worst * 0.99)
    with pytest.raises(BudgetExceeded):
        run(_classify(t, "x" * 400, budget=budget))
    assert plan.count == 0 and budget.spent_usd == 0.0 and budget.reserved_usd == 0.0

    budget = Budget(worst * 1.01)
    ans = run(_classify(_teacher(plan.base_url, tmp_store, price_per_1m_input=1000.0, price_per_1m_output=1000.0),
                        "x" * 400, budget=budget))
    assert ans.answer == "billing" and plan.count == 1
    assert budget.spent_usd == pytest.approx(ans.cost_usd)
    assert 0 < budget.spent_usd <= budget.limit_usd
    assert budget.reserved_usd == pytest.approx(0.0)


def test_budget_is_released_when_the_call_fails(fault_server) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"status": 503})
    budget = Budget(1.0)
    with pytest.raises(TeacherStatusError):
        run(_classify(_teacher(plan.base_url, retry=RetryPolicy(max_retries=0)), "x", budget=budget))
    assert budget.spent_usd == 0.0 and budget.reserved_usd == 0.0


def test_cached_answers_need_no_budget(replay_teacher, reuters_records, r8_task, tmp_store) -> None:  # type: ignore[no-untyped-def]
    text = next(iter(reuters_records))
    run(_classify(_teacher(replay_teacher.base_url, tmp_store), text, r8_task, "news"))
    ans = run(_classify(_teacher(replay_teacher.base_url, tmp_store), text, r8_task, "news", budget=Budget(0.0)))
    assert ans.cached and ans.answer == reuters_records[text]


def test_falls_back_to_json_object_schema_when_json_schema_is_rejected(fault_server, tmp_store) -> None:  # type: ignore[no-untyped-def]
    plan = fault_server.plan({"reject_json_schema": True, "content": '{"label": "technical"}'})

    async def go() -> tuple:
        async with _teacher(plan.base_url, tmp_store) as t:
            a = await t.ask("the app crashes", task_name="tickets", task=TASK)
            b = await t.ask("error 500 on login page", task_name="tickets", task=TASK)
            return a, b

    a, b = run(go())
    assert a.answer == "technical" and b.answer == "technical"
    kinds = [r["response_format"]["type"] for r in plan.requests]
    assert kinds == ["json_schema", "json_object", "json_object"]  # not retried; remembered
    assert plan.requests[1]["response_format"]["schema"] == TASK.answer_schema()
    assert a.http_requests == 2 and b.http_requests == 1
    with tmp_store.session() as s:
        assert s.scalar(select(func.count()).select_from(TeacherCall)) == 2  # the rejection was not paid


def test_transport_is_injectable_and_missing_usage_is_estimated() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"choices": [{"message": {"role": "assistant", "content": "billing"}}]})

    async def go():  # type: ignore[no-untyped-def]
        async with AsyncTeacher("http://teacher.invalid/v1", model="m", transport=httpx.MockTransport(handler)) as t:
            return await t.ask("x" * 40, task_name="tickets", task=TASK)

    ans = run(go())
    assert ans.answer == "billing" and ans.call_id is None and not ans.cached  # no store: nothing recorded
    assert str(seen[0].url) == "http://teacher.invalid/v1/chat/completions"
    assert ans.input_tokens == sum(-(-len(m["content"]) // 4) + 4 for m in build_messages(TASK, "x" * 40))
    assert ans.output_tokens == 2  # "billing" is 7 chars: no usage reported, so estimated


def test_prefetch_checks_the_cache_in_bulk(replay_teacher, reuters_records, r8_task, tmp_store) -> None:  # type: ignore[no-untyped-def]
    (a, la), (b, lb) = list(reuters_records.items())[:2]
    run(_classify(_teacher(replay_teacher.base_url, tmp_store), a, r8_task, "news"))
    t = _teacher(replay_teacher.base_url, tmp_store)
    key = t.request_hash(build_messages(r8_task, a), {"type": "json_schema", "json_schema": {
        "name": "label", "strict": True, "schema": r8_task.answer_schema()}}, 64)
    assert tmp_store.recorded_hashes([key, "0" * 64, key]) == {key}

    async def go():  # type: ignore[no-untyped-def]
        async with t:
            assert t.prefetch([a, b, b], task=r8_task) == 1
            return await t.ask(a, task_name="news", task=r8_task), await t.ask(b, task_name="news", task=r8_task)

    ans_a, ans_b = run(go())
    assert (ans_a.answer, ans_a.cached) == (la, True) and (ans_b.answer, ans_b.cached) == (lb, False)
    assert replay_teacher.stats["requests"] == 2
    assert AsyncTeacher("http://x/v1", model="m").prefetch([a], task=r8_task) == 0  # no store, no cache
