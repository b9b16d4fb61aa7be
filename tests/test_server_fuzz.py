"""Property-based fuzzing of the gateway's request bodies: whatever arrives, never a 5xx, and
every error is an OpenAI-style body."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from downsize.server.keys import create_key
from downsize.replay import ReplayServer
from downsize.server import create_app
from downsize.store import Store

MODEL = "downsize/news"
#: FUZZ_EXAMPLES=2000 for a longer run (default 150 per test keeps the suite fast).
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
                phases=tuple(Phase) if os.environ.get("FUZZ_SHRINK", "1") == "1" else
                [Phase.explicit, Phase.reuse, Phase.generate])

odd_text = st.one_of(
    st.text(max_size=50),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=0, max_size=200),
    st.sampled_from(["", " ", "\x00", "\ud800", "\udfff\ud800", "💥" * 50, "a" * 20_000, "\u202e", "null"]),
)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | odd_text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(odd_text, children, max_size=5),
    max_leaves=25,
)
content = st.one_of(odd_text, st.none(), json_value,
                    st.lists(st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", 3]),
                                                    "text": st.one_of(odd_text, st.integers(), st.none())}),
                             max_size=3))
message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant", "tool", "", 7]),
                           "content": content}),
    json_value,
)
chat_body = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.sampled_from([MODEL, "downsize/nope", "downsize/", "gpt-4o", "", "x" * 300]),
                           json_value),
        "messages": st.one_of(st.lists(message, max_size=4), json_value),
        "stream": st.one_of(st.booleans(), json_value),
        "stream_options": json_value,
        "response_format": st.one_of(st.sampled_from([{"type": "json_object"}, {"type": "text"},
                                                      {"type": "json_schema"}, {"type": "xml"}]), json_value),
        "max_tokens": st.one_of(st.integers(), json_value),
        "n": st.one_of(st.integers(), json_value),
        "temperature": json_value,
        "self": json_value,
        "tools": json_value,
    },
)


@pytest.fixture(scope="module")
def app_client(gateway_project: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, str]]:
    with ReplayServer(gateway_project.records) as replay:
        cfg = gateway_project.config(tmp_path_factory.mktemp("fuzz"), replay.base_url,
                                     server={"max_body_bytes": 200_000, "max_batch": 16})
        with Store(cfg.store_url()) as store:
            key = create_key(store, "fuzz").secret
            with TestClient(create_app(cfg, store=store), raise_server_exceptions=False) as c:
                yield c, key


def _post(c: TestClient, path: str, raw: bytes, key: str) -> Any:
    t0 = time.perf_counter()
    r = c.post(path, content=raw, headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert time.perf_counter() - t0 < 5.0, ("slow answer", raw[:300])
    return r


def _check(r: Any) -> None:
    assert r.status_code < 500, (r.status_code, r.text[:500])
    if r.status_code >= 400:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and isinstance(err["message"], str)


@FUZZ
@given(body=chat_body)
def test_chat_bodies(app_client: tuple[TestClient, str], body: dict[str, Any]) -> None:
    c, key = app_client
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    _check(_post(c, "/v1/chat/completions", raw, key))


@FUZZ
@given(body=json_value)
def test_arbitrary_json(app_client: tuple[TestClient, str], body: Any) -> None:
    c, key = app_client
    for path in ("/v1/chat/completions", "/v1/tasks/news/predict"):
        _check(_post(c, path, json.dumps(body).encode(), key))


@FUZZ
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes(app_client: tuple[TestClient, str], raw: bytes) -> None:
    c, key = app_client
    for path in ("/v1/chat/completions", "/v1/tasks/news/predict", "/v1/tasks/%ff/predict"):
        _check(_post(c, path, raw, key))


@FUZZ
@given(inputs=st.one_of(st.lists(odd_text, max_size=20), json_value), extra=st.dictionaries(odd_text, json_value,
                                                                                          max_size=2))
def test_predict_bodies(app_client: tuple[TestClient, str], inputs: Any, extra: dict[str, Any]) -> None:
    c, key = app_client
    raw = json.dumps({"inputs": inputs, **extra}, ensure_ascii=False).encode("utf-8", "surrogatepass")
    _check(_post(c, "/v1/tasks/news/predict", raw, key))


@pytest.mark.parametrize("raw", [
    b'{"model": "downsize/news", "messages": [{"role": "user", "content": "\\ud800"}]}',  # lone surrogate
    b'{"model": "downsize/news", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',  # encoded surrogate
    b"[" * 100_000 + b"]" * 100_000,  # nesting
    b'{"model": "downsize/news", "n": 1' + b"0" * 5000 + b"}",  # an integer with 5,000 digits
    b'{"model": "downsize/news", "messages": [{"role": "user", "content": "a"}], "stream": NaN}',
    b"\xff\xfe{}",
    b"",
])
def test_nasty_bodies(app_client: tuple[TestClient, str], raw: bytes) -> None:
    c, key = app_client
    r = c.post("/v1/chat/completions", content=raw, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 400, r.text
    _check(r)


@pytest.mark.parametrize("method,path", [("GET", "/v1/chat/completions"), ("PUT", "/v1/models"),
                                         ("GET", "/nowhere"), ("DELETE", "/v1/tasks/news/predict")])
def test_wrong_routes_and_methods(app_client: tuple[TestClient, str], method: str, path: str) -> None:
    c, key = app_client
    r = c.request(method, path, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code in (404, 405)
    _check(r)


def test_bad_content_length(app_client: tuple[TestClient, str]) -> None:
    c, key = app_client
    r = c.post("/v1/chat/completions", content=b"{}", headers={"Authorization": f"Bearer {key}",
                                                                "Content-Length": "300000"})
    assert r.status_code == 413


def test_encoded_surrogate_in_predict_inputs(app_client: tuple[TestClient, str]) -> None:
    c, key = app_client
    r = _post(c, "/v1/tasks/news/predict", b'{"inputs": ["ok", "\xed\xa0\x80"]}', key)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_openapi_schema_documents_the_routes(app_client: tuple[TestClient, str]) -> None:
    c, _ = app_client
    paths = c.get("/openapi.json").json()["paths"]
    assert {"/v1/chat/completions", "/v1/tasks/{task}/predict", "/v1/models", "/healthz", "/metrics"} <= set(paths)
    body = paths["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"model", "messages"} <= set(body["required"])
