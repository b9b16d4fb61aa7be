"""The gateway through the official OpenAI SDK, unmodified, against a real uvicorn on loopback.

A calibrated Reuters task (``downsize/news``) and the replay teacher: chat completions,
streaming, JSON answers, errors mapped to the SDK's exceptions, pass-through, shadow mode,
spot checks, the teacher going down, the audit log, health, metrics and the models list.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from sqlalchemy import select

from downsize.config import Config
from downsize.server.keys import create_key, revoke_key
from downsize.replay import ReplayServer
from downsize.training import student_dir
from downsize.server import ServerThread, create_app
from downsize.store import Label, RequestLog, SpotCheck, Store, text_hash

MODEL = "downsize/news"


# -- fixtures ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def replay(gateway_project: Any) -> Iterator[ReplayServer]:
    with ReplayServer(gateway_project.records) as srv:
        yield srv


@pytest.fixture(scope="module")
def cfg(gateway_project: Any, replay: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> Config:
    return gateway_project.config(tmp_path_factory.mktemp("server"), replay.base_url,
                                  server={"max_body_bytes": 64 * 1024, "max_batch": 8})


@pytest.fixture(scope="module")
def store(cfg: Config) -> Iterator[Store]:
    with Store(cfg.store_url()) as s:
        yield s


@pytest.fixture(scope="module")
def key(store: Store) -> str:
    return create_key(store, "tests").secret


@pytest.fixture(scope="module")
def server(cfg: Config, store: Store, key: str) -> Iterator[ServerThread]:
    with ServerThread(create_app(cfg, store=store)) as srv:
        yield srv


@pytest.fixture
def client(server: ServerThread, key: str) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=30)


def _rows(store: Store, request_id: str) -> list[RequestLog]:
    with store.session() as s:
        return list(s.scalars(select(RequestLog).where(RequestLog.request_id.like(request_id + "%"))))


def _wait_rows(store: Store, request_id: str, n: int = 1, timeout: float = 10.0) -> list[RequestLog]:
    deadline = time.monotonic() + timeout
    while True:
        rows = _rows(store, request_id)
        if len(rows) >= n or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


# -- the task path -------------------------------------------------------------------
def test_confident_text_is_answered_by_the_student(client: OpenAI, gateway_project: Any, store: Store) -> None:
    text = gateway_project.confident[0]
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=[
        {"role": "system", "content": "ignored by the student"}, {"role": "user", "content": text}])
    c = raw.parse()
    assert c.choices[0].message.content == gateway_project.records[text] or c.choices[0].message.content
    assert c.model == MODEL and c.object == "chat.completion" and c.choices[0].finish_reason == "stop"
    assert raw.headers["x-downsize-answered-by"] == "student"
    assert float(raw.headers["x-downsize-confidence"]) >= gateway_project.threshold
    assert float(raw.headers["x-downsize-cost-usd"]) == 0.0
    assert c.usage is not None and c.usage.total_tokens == 0
    [row] = _wait_rows(store, c.id)
    assert (row.task, row.answered_by, row.answer, row.status_code) == (
        "news", "student", c.choices[0].message.content, 200)
    assert row.input_hash == text_hash(text) and row.input_text == text
    assert row.threshold == pytest.approx(gateway_project.threshold) and row.student_version_id is not None
    assert row.teacher_only_cost_usd > 0 and row.teacher_cost_usd == 0
    assert row.student_cpu_ms is not None and row.latency_ms >= row.student_latency_ms > 0
    assert row.client_key_id and row.client_key_id.startswith("key_")


def test_unsure_text_goes_to_the_teacher(client: OpenAI, gateway_project: Any, store: Store,
                                         replay: ReplayServer) -> None:
    text = gateway_project.unsure[0]
    before = replay.stats["requests"]
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=[{"role": "user", "content": text}])
    c = raw.parse()
    assert raw.headers["x-downsize-answered-by"] == "teacher"
    assert c.choices[0].message.content == gateway_project.records[text]
    assert float(raw.headers["x-downsize-confidence"]) < gateway_project.threshold
    assert float(raw.headers["x-downsize-cost-usd"]) > 0 and c.usage.prompt_tokens > 0
    assert replay.stats["requests"] == before + 1
    [row] = _wait_rows(store, c.id)
    assert row.answered_by == "teacher" and row.teacher_label == c.choices[0].message.content
    assert row.teacher_cost_usd > 0 and row.teacher_latency_ms > 0


def test_content_parts_and_the_last_user_message(client: OpenAI, gateway_project: Any) -> None:
    a, b = gateway_project.confident[1], gateway_project.confident[2]
    half = len(b) // 2
    c = client.chat.completions.create(model=MODEL, messages=[
        {"role": "user", "content": a}, {"role": "assistant", "content": "earn"},
        {"role": "user", "content": [{"type": "text", "text": b[:half]}, {"type": "text", "text": b[half:]}]}])
    direct = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": b}])
    assert c.choices[0].message.content == direct.choices[0].message.content


def test_streaming(client: OpenAI, gateway_project: Any) -> None:
    text = gateway_project.confident[3]
    expected = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}])
    chunks = list(client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}],
                                                 stream=True, stream_options={"include_usage": True}))
    content = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert content == expected.choices[0].message.content
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"
    assert chunks[-1].usage is not None and all(ch.object == "chat.completion.chunk" for ch in chunks)


@pytest.mark.parametrize("fmt", [{"type": "json_object"},
                                 {"type": "json_schema",
                                  "json_schema": {"name": "label", "schema": {"type": "object"}}}])
def test_json_response_format(client: OpenAI, gateway_project: Any, fmt: dict[str, Any]) -> None:
    text = gateway_project.unsure[1]
    c = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}],
                                       response_format=fmt)  # type: ignore[arg-type]
    assert json.loads(c.choices[0].message.content or "") == {"label": gateway_project.records[text]}


def test_predict_endpoint(server: ServerThread, key: str, gateway_project: Any, store: Store) -> None:
    texts = gateway_project.confident[10:13] + gateway_project.unsure[10:12]
    r = httpx.post(f"{server.base_url}/tasks/news/predict", json={"inputs": texts},
                   headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["answered_by"] for x in res] == ["student"] * 3 + ["teacher"] * 2
    assert [x["label"] for x in res[3:]] == [gateway_project.records[t] for t in texts[3:]]
    assert all(x["latency_ms"] > 0 and x["confidence"] is not None for x in res)
    assert len(_wait_rows(store, r.json()["id"], 5)) == 5
    too_many = httpx.post(f"{server.base_url}/tasks/news/predict", json={"inputs": ["x"] * 9},
                          headers={"Authorization": f"Bearer {key}"})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "inputs"
    unknown = httpx.post(f"{server.base_url}/tasks/nope/predict", json={"inputs": ["x"]},
                         headers={"Authorization": f"Bearer {key}"})
    assert unknown.status_code == 404 and "tasks: news" in unknown.json()["error"]["message"]


# -- errors through the SDK ----------------------------------------------------------
def test_missing_and_wrong_keys_are_401(server: ServerThread, gateway_project: Any) -> None:
    msg = [{"role": "user", "content": gateway_project.confident[0]}]
    with pytest.raises(openai.AuthenticationError) as e:
        OpenAI(base_url=server.base_url, api_key="dsk_wrong", max_retries=0).chat.completions.create(
            model=MODEL, messages=msg)  # type: ignore[arg-type]
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"
    r = httpx.post(f"{server.base_url}/chat/completions", json={"model": MODEL, "messages": msg})
    assert r.status_code == 401 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_revoked_key_stops_working(server: ServerThread, store: Store, gateway_project: Any) -> None:
    k = create_key(store, "short-lived")
    c = OpenAI(base_url=server.base_url, api_key=k.secret, max_retries=0)
    msg = [{"role": "user", "content": gateway_project.confident[0]}]
    c.chat.completions.create(model=MODEL, messages=msg)  # type: ignore[arg-type]  # a new key works at once
    revoke_key(store, k.key_id)
    gw = server.app.state.gateway
    gw.keyring.reload()  # what the 5-second refresh does
    with pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model=MODEL, messages=msg)  # type: ignore[arg-type]


def test_unknown_task_is_404(client: OpenAI, store: Store) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="downsize/nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found" and "downsize/news" in e.value.message


def test_bad_requests_are_400_and_audited_when_the_task_is_known(client: OpenAI, store: Store,
                                                                 server: ServerThread, key: str) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "system", "content": "no user message"}])
    assert e.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, n=2, messages=[{"role": "user", "content": "a text"}])
    assert e.value.param == "n"
    r = httpx.post(f"{server.base_url}/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json={"model": MODEL, "messages": "not a list"})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("messages")
    [row] = _wait_rows(store, r.headers["x-request-id"])
    assert (row.task, row.answered_by, row.status_code, row.model) == ("news", "error", 400, MODEL)
    assert row.client_key_id is not None and "messages" in row.reason


def test_body_over_the_limit_is_413(client: OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * 100_000}])
    assert e.value.status_code == 413 and "max_body_bytes" in e.value.message


def test_rate_limit_is_429_with_retry_after(gateway_project: Any, replay: ReplayServer, tmp_path: Path) -> None:
    cfg = gateway_project.config(tmp_path, replay.base_url, server={"rate_limit_per_minute": 3})
    with ServerThread(create_app(cfg, auth=False)) as srv:
        c = OpenAI(base_url=srv.base_url, api_key="unused", max_retries=0)
        msg = [{"role": "user", "content": gateway_project.confident[0]}]
        for _ in range(3):
            c.chat.completions.create(model=MODEL, messages=msg)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as e:
            c.chat.completions.create(model=MODEL, messages=msg)  # type: ignore[arg-type]
        assert e.value.response.headers["retry-after"] == "20"
        assert e.value.code == "rate_limit_exceeded"


# -- pass-through ----------------------------------------------------------------------
def test_other_models_pass_through_to_the_teacher(client: OpenAI, gateway_project: Any, store: Store) -> None:
    text = gateway_project.confident[5]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": text}], temperature=0.0)
    c = raw.parse()
    assert raw.headers["x-downsize-answered-by"] == "passthrough"
    assert c.choices[0].message.content == gateway_project.records[text]
    assert c.model == "replay-gpt"  # the default teacher's model answered
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": text}],
                                                 stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == gateway_project.records[text]
    rid = raw.headers["x-request-id"]
    [row] = _wait_rows(store, rid)
    assert row.task is None and row.answered_by == "passthrough" and row.model == "gpt-4o"
    assert row.input_text is None and row.teacher_cost_usd > 0  # pass-through text is not kept by default


def test_models_list(client: OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[0] == MODEL and "replay-gpt" in ids
    assert client.models.retrieve(MODEL).owned_by == "downsize"


# -- health and metrics ---------------------------------------------------------------
def test_healthz_and_metrics(server: ServerThread, client: OpenAI, gateway_project: Any) -> None:
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": gateway_project.confident[0]}])
    h = httpx.get(f"{server.url}/healthz")
    assert h.status_code == 200
    body = h.json()
    assert body["status"] == "ok" and body["store"]["ok"] and body["teachers"]["default"]["ok"]
    assert body["tasks"]["news"]["mode"] == "cascade"
    m = httpx.get(f"{server.url}/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    for name in ('downsize_requests_total{answered_by="student",task="news"}',
                 "downsize_request_latency_seconds_bucket", "downsize_teacher_cost_usd_total",
                 "downsize_saved_usd_total", 'downsize_escalation_ratio{task="news"}',
                 'downsize_teacher_up{teacher="default"} 1.0'):
        assert name in m.text, name


# -- modes and faults ------------------------------------------------------------------
def test_shadow_mode_records_teacher_labels(gateway_project: Any, replay: ReplayServer, tmp_path: Path) -> None:
    cfg = gateway_project.config(tmp_path, replay.base_url, task={"mode": "shadow"})
    text = gateway_project.confident[20]
    with Store(cfg.store_url()) as st:
        with st.session() as s:
            before = len(list(s.scalars(select(Label))))
        with ServerThread(create_app(cfg, store=st, auth=False)) as srv:
            raw = OpenAI(base_url=srv.base_url, api_key="x", max_retries=0).chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": text}])
            assert raw.headers["x-downsize-answered-by"] == "shadow"
            assert raw.parse().choices[0].message.content == gateway_project.records[text]
            assert srv.app.state.gateway.tasks["news"].mode == "shadow"
        [row] = _rows(st, raw.parse().id)  # the shutdown flushed it
        assert row.answered_by == "shadow" and row.student_label and row.confidence is not None
        assert row.teacher_label == gateway_project.records[text]
        with st.session() as s:
            labels = list(s.scalars(select(Label)))
        assert len(labels) == before + 1 and labels[-1].source == "teacher"


def test_spot_checks_run_in_the_background(gateway_project: Any, replay: ReplayServer, tmp_path: Path) -> None:
    cfg = gateway_project.config(tmp_path, replay.base_url, task={"spot_check_rate": 1.0})
    texts = gateway_project.confident[30:36]
    with Store(cfg.store_url()) as st:
        with ServerThread(create_app(cfg, store=st, auth=False)) as srv:
            c = OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
            ids = [c.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": t}]).id for t in texts]
        with st.session() as s:
            checks = list(s.scalars(select(SpotCheck)))
    assert sorted(ch.request_id for ch in checks) == sorted(ids)
    assert all(ch.agree is not None and ch.teacher_label for ch in checks)
    assert sum(ch.agree for ch in checks) >= 4  # confident answers mostly agree


def test_teacher_down_falls_back_to_the_student(gateway_project: Any, tmp_path: Path) -> None:
    teacher = ReplayServer(gateway_project.records).start()
    cfg = gateway_project.config(tmp_path, teacher.base_url, server={"deadline_s": 3.0})
    unsure = gateway_project.unsure[12:18]
    with ServerThread(create_app(cfg, auth=False)) as srv:
        c = OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        up = c.chat.completions.with_raw_response.create(model=MODEL, messages=[{"role": "user", "content": unsure[0]}])
        assert up.headers["x-downsize-answered-by"] == "teacher"
        teacher.stop()
        t0 = time.perf_counter()
        for t in unsure[1:]:
            r = c.chat.completions.with_raw_response.create(model=MODEL, messages=[{"role": "user", "content": t}])
            assert r.headers["x-downsize-answered-by"] == "student_fallback"
            assert r.parse().choices[0].message.content in gateway_project.records.values()
        assert time.perf_counter() - t0 < 10  # the breaker opens: no deadline wait per request
        with pytest.raises(openai.InternalServerError) as e:  # pass-through has no student: a clear 503
            c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": unsure[0]}])
        assert e.value.status_code == 503 and "unavailable" in e.value.message
        assert httpx.get(f"{srv.url}/healthz").json()["status"] == "degraded"


def test_slow_teacher_hits_the_deadline(gateway_project: Any, tmp_path: Path) -> None:
    with ReplayServer(gateway_project.records, latency_ms=3000) as slow:
        cfg = gateway_project.config(tmp_path, slow.base_url, server={"deadline_s": 0.3})
        with ServerThread(create_app(cfg, auth=False)) as srv:
            c = OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
            t0 = time.perf_counter()
            r = c.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": gateway_project.unsure[20]}])
            assert time.perf_counter() - t0 < 2.0
            assert r.headers["x-downsize-answered-by"] == "student_fallback"
            assert "TeacherTimeout" in r.parse().model_extra["downsize"]["reason"]
            with pytest.raises(openai.APIStatusError) as e:
                c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
            assert e.value.status_code == 504


def test_the_teacher_key_never_leaves(gateway_project: Any, fault_server: Any, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-live-SECRET-0123456789abcdef"
    monkeypatch.setenv("DS_TEST_TEACHER_KEY", secret)
    plan = fault_server.plan({"status": 401, "echo_auth": True})
    cfg = gateway_project.config(tmp_path, plan.base_url, teacher={"api_key_env": "DS_TEST_TEACHER_KEY"})
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG), Store(cfg.store_url()) as st:
        with ServerThread(create_app(cfg, store=st, auth=False)) as srv:
            c = OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
            for model, text in ((MODEL, gateway_project.unsure[22]), ("gpt-4o", "hello")):
                try:
                    r = c.chat.completions.with_raw_response.create(
                        model=model, messages=[{"role": "user", "content": text}])
                    seen += [r.http_response.text, str(dict(r.headers))]
                except openai.APIStatusError as exc:
                    seen += [exc.response.text, str(exc), str(dict(exc.response.headers))]
            seen += [httpx.get(f"{srv.url}/healthz").text, httpx.get(f"{srv.url}/metrics").text]
        with st.session() as s:
            seen += [json.dumps([{c: str(getattr(r, c)) for c in ("reason", "answer", "input_text")}
                                 for r in s.scalars(select(RequestLog))])]
    assert plan.headers and plan.headers[0]["authorization"] == f"Bearer {secret}"  # it was really sent
    assert any("rejected" in x or "student_fallback" in x for x in seen)
    for blob in seen + [caplog.text]:
        assert secret not in blob


def test_a_task_without_a_student_is_served_by_the_teacher_in_shadow_mode(
        gateway_project: Any, replay: ReplayServer, tmp_path: Path) -> None:
    fresh = {"instructions": "Route the story.", "labels": {"earn": "e", "acq": "a", "crude": "c", "trade": "t",
                                                             "money-fx": "m", "interest": "i", "ship": "s",
                                                             "grain": "g"}}
    cfg = gateway_project.config(tmp_path, replay.base_url, tasks={"fresh": fresh})
    text = gateway_project.confident[40]
    with Store(cfg.store_url()) as st:
        with ServerThread(create_app(cfg, store=st, auth=False)) as srv:
            c = OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
            r = c.chat.completions.with_raw_response.create(model="downsize/fresh",
                                                            messages=[{"role": "user", "content": text}])
            assert r.headers["x-downsize-answered-by"] == "shadow" and "x-downsize-confidence" not in r.headers
            assert r.parse().choices[0].message.content == gateway_project.records[text]
            health = httpx.get(f"{srv.url}/healthz").json()["tasks"]["fresh"]
            assert health["mode"] == "shadow" and "no student" in health["reason"]
        [row] = _rows(st, r.parse().id)
        assert row.student_label is None and row.confidence is None and row.teacher_label == row.answer
        assert [e.label for e in st.labelled_examples("fresh")] == [gateway_project.records[text]]


def test_a_corrupt_student_degrades_to_the_teacher(gateway_project: Any, replay: ReplayServer, tmp_path: Path) -> None:
    import shutil

    from downsize.store import StudentVersion

    cfg = gateway_project.config(tmp_path, replay.base_url)
    with Store(cfg.store_url()) as st:
        with st.session() as s:
            sv = s.scalars(select(StudentVersion)).one()
            copy = tmp_path / "student-copy"
            shutil.copytree(student_dir(sv, cfg.home_dir()), copy)
            sv.path = str(copy)
        (copy / "manifest.json").write_text((copy / "manifest.json").read_text() + " ")
        with ServerThread(create_app(cfg, store=st, auth=False)) as srv:
            r = OpenAI(base_url=srv.base_url, api_key="x", max_retries=0).chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": gateway_project.confident[41]}])
            assert r.headers["x-downsize-answered-by"] == "shadow"
            task = httpx.get(f"{srv.url}/healthz").json()["tasks"]["news"]
            assert task["mode"] == "shadow" and "checksum" in task["load_error"]


def test_spot_check_with_the_teacher_down_is_recorded_as_failed(gateway_project: Any, tmp_path: Path) -> None:
    cfg = gateway_project.config(tmp_path, "http://127.0.0.1:9/v1", task={"spot_check_rate": 1.0},
                                 teacher={"max_retries": 0})
    with Store(cfg.store_url()) as st:
        with ServerThread(create_app(cfg, store=st, auth=False)) as srv:
            c = OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
            r = c.chat.completions.with_raw_response.create(
                model=MODEL, messages=[{"role": "user", "content": gateway_project.confident[42]}])
            assert r.headers["x-downsize-answered-by"] == "student"
        with st.session() as s:
            [check] = list(s.scalars(select(SpotCheck)))
    assert check.agree is None and check.teacher_label is None and check.request_id == r.parse().id
