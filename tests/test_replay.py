"""The replay teacher over real HTTP on loopback: protocol, knobs, counters, processes."""

from __future__ import annotations

import csv
import functools
import gzip
import time
from pathlib import Path

import httpx
import pytest

from downsize.errors import DataError
from downsize.replay import ReplayProcess, ReplayServer, create_replay_app, load_records

from conftest import REUTERS_DEMO


@functools.cache
def _client() -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=10)  # one client: building its SSL context takes ~20 ms


def _post(base_url: str, messages: list[dict], **extra) -> httpx.Response:  # type: ignore[no-untyped-def]
    return _client().post(f"{base_url}/chat/completions", json={"model": "x", "messages": messages, **extra})


def _user(text: str) -> list[dict]:
    return [{"role": "system", "content": "Label the story."}, {"role": "user", "content": text}]


def test_answers_the_recorded_label_bare_or_as_json(replay_teacher, reuters_records) -> None:  # type: ignore[no-untyped-def]
    text, label = next(iter(reuters_records.items()))
    bare = _post(replay_teacher.base_url, _user(text)).json()
    assert bare["object"] == "chat.completion"
    assert bare["choices"][0]["message"] == {"role": "assistant", "content": label}
    assert bare["choices"][0]["finish_reason"] == "stop"
    for fmt in ({"type": "json_schema", "json_schema": {"name": "label", "schema": {}}},
                {"type": "json_object"}):
        body = _post(replay_teacher.base_url, _user(text), response_format=fmt).json()
        assert body["choices"][0]["message"]["content"] == f'{{"label": "{label}"}}'


def test_usage_is_counted_like_a_real_server(replay_teacher, reuters_records) -> None:  # type: ignore[no-untyped-def]
    text, label = next(iter(reuters_records.items()))
    usage = _post(replay_teacher.base_url, _user(text)).json()["usage"]
    chars = len("Label the story.") + len(text)
    assert usage["prompt_tokens"] == -(-chars // 4)
    assert usage["completion_tokens"] == max(1, -(-len(label) // 4))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_the_first_user_message_that_is_a_known_text_wins(replay_teacher, reuters_records) -> None:  # type: ignore[no-untyped-def]
    (t1, l1), (t2, _) = list(reuters_records.items())[:2]
    repair = [*_user(t1), {"role": "assistant", "content": "no idea"},
              {"role": "user", "content": "That is not a label. Answer again."}]
    assert _post(replay_teacher.base_url, repair).json()["choices"][0]["message"]["content"] == l1
    both = [{"role": "user", "content": "unknown preface"}, {"role": "user", "content": t1},
            {"role": "user", "content": t2}]
    assert _post(replay_teacher.base_url, both).json()["choices"][0]["message"]["content"] == l1
    parts = [{"role": "user", "content": [{"type": "text", "text": t1}]}]
    assert _post(replay_teacher.base_url, parts).json()["choices"][0]["message"]["content"] == l1


def test_unknown_text_is_an_openai_style_404(replay_teacher) -> None:  # type: ignore[no-untyped-def]
    r = _post(replay_teacher.base_url, _user("this text was never recorded"))
    assert r.status_code == 404
    err = r.json()["error"]
    assert err["type"] == "not_found" and "not in the replay file" in err["message"]


def test_bad_requests_are_400(replay_teacher) -> None:  # type: ignore[no-untyped-def]
    r = _client().post(f"{replay_teacher.base_url}/chat/completions", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert _post(replay_teacher.base_url, []).status_code == 400


def test_models_and_stats(replay_teacher, reuters_records) -> None:  # type: ignore[no-untyped-def]
    models = _client().get(f"{replay_teacher.base_url}/models").json()
    assert models["object"] == "list" and models["data"][0]["id"]
    text = next(iter(reuters_records))
    for _ in range(3):
        _post(replay_teacher.base_url, _user(text))
    _post(replay_teacher.base_url, _user("unknown"))
    stats = _client().get(f"{replay_teacher.url}/stats").json()
    assert stats["requests"] == 4 and stats["by_status"] == {"200": 3, "404": 1}
    assert stats["in_flight"] == 0 and stats["oldest_in_flight_ms"] == 0.0
    assert replay_teacher.stats == stats
    assert {k: v for k, v in stats.items() if k != "oldest_in_flight_ms"} == replay_teacher.app.state.stats


def test_openai_sdk_talks_to_it(replay_teacher, reuters_records) -> None:  # type: ignore[no-untyped-def]
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=replay_teacher.base_url, api_key="unused", max_retries=0,
                           http_client=httpx.Client(trust_env=False))
    text, label = next(iter(reuters_records.items()))
    out = client.chat.completions.create(model="replay", messages=_user(text))  # type: ignore[arg-type]
    assert out.choices[0].message.content == label and out.usage is not None and out.usage.prompt_tokens > 0
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="replay", messages=_user("nope"))  # type: ignore[arg-type]


def test_noise_is_seeded_deterministic_per_text_and_near_its_rate(reuters_records) -> None:  # type: ignore[no-untyped-def]
    labels = sorted(set(reuters_records.values()))

    def answers(seed: int) -> dict[str, str]:
        with ReplayServer(reuters_records, noise=0.3, seed=seed, labels=labels) as srv:
            return {t: _post(srv.base_url, _user(t)).json()["choices"][0]["message"]["content"]
                    for t in reuters_records}

    a, b, c = answers(1), answers(1), answers(2)
    assert a == b  # the same texts get the same wrong labels
    assert a != c
    wrong = [t for t in reuters_records if a[t] != reuters_records[t]]
    assert 0.2 < len(wrong) / len(reuters_records) < 0.4
    assert all(a[t] in labels for t in wrong)


def test_error_rate_is_seeded(reuters_records) -> None:  # type: ignore[no-untyped-def]
    text = next(iter(reuters_records))

    def statuses(seed: int) -> list[int]:
        with ReplayServer(reuters_records, error_rate=0.3, seed=seed) as srv:
            out = [_post(srv.base_url, _user(text)).status_code for _ in range(200)]
            assert srv.stats["by_status"].get("500", 0) == out.count(500)
            return out

    a, b = statuses(7), statuses(7)
    assert a == b and set(a) == {200, 500}
    assert 0.2 < a.count(500) / len(a) < 0.4
    with ReplayServer(reuters_records, error_rate=0.3, seed=7) as srv:
        body = _post(srv.base_url, _user(text))
        while body.status_code != 500:
            body = _post(srv.base_url, _user(text))
        assert body.json()["error"]["type"] == "server_error"


def test_latency_is_added(reuters_records) -> None:  # type: ignore[no-untyped-def]
    text = next(iter(reuters_records))
    with ReplayServer(reuters_records, latency_ms=200) as srv:
        t0 = time.perf_counter()
        assert _post(srv.base_url, _user(text)).status_code == 200
        assert time.perf_counter() - t0 >= 0.2


def test_a_client_that_goes_away_is_not_counted_as_paid(reuters_records) -> None:  # type: ignore[no-untyped-def]
    text = next(iter(reuters_records))
    with ReplayServer(reuters_records, latency_ms=300) as srv:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{srv.base_url}/chat/completions", json={"messages": _user(text)}, timeout=0.1,
                       trust_env=False)
        deadline = time.monotonic() + 5
        while srv.stats["abandoned"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert srv.stats["abandoned"] == 1 and srv.stats["requests"] == 0


def test_bad_knobs_are_rejected() -> None:
    with pytest.raises(ValueError, match="noise"):
        create_replay_app({"a": "x"}, noise=1.5)
    with pytest.raises(ValueError, match="error_rate"):
        create_replay_app({"a": "x"}, error_rate=-0.1)
    with pytest.raises(ValueError, match="latency_ms"):
        create_replay_app({"a": "x"}, latency_ms=-1)


def test_from_file_and_a_given_port(reuters_records) -> None:  # type: ignore[no-untyped-def]
    from downsize.replay.run import _free_port

    port = _free_port()
    with ReplayServer.from_file(REUTERS_DEMO, port=port) as srv:
        assert srv.base_url == f"http://127.0.0.1:{port}/v1"
        text, label = next(iter(reuters_records.items()))
        assert _post(srv.base_url, _user(text)).json()["choices"][0]["message"]["content"] == label


def test_missing_column_is_a_data_error_naming_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "answers.csv"
    path.write_text("text,topic\nhello,greeting\n")
    with pytest.raises(DataError, match=r"answers\.csv.*no column 'label'"):
        ReplayServer.from_file(path)
    with pytest.raises(DataError, match=r"answers\.csv.*no column 'body'"):
        load_records(path, text_col="body", label_col="topic")
    assert load_records(path, label_col="topic") == {"hello": "greeting"}


def test_repeated_texts_keep_their_first_label(tmp_path: Path) -> None:
    path = tmp_path / "dups.csv.gz"
    with gzip.open(path, "wt", newline="") as fh:
        w = csv.writer(fh)
        w.writerows([["text", "label"], ["same", "a"], ["same", "b"], ["other", "c"]])
    assert load_records(path) == {"same": "a", "other": "c"}


def test_replay_process_serves_from_a_child_process(reuters_records) -> None:  # type: ignore[no-untyped-def]
    text, label = next(iter(reuters_records.items()))
    with ReplayProcess(REUTERS_DEMO, latency_ms=1) as proc:
        assert proc.proc is not None and proc.proc.pid
        assert _post(proc.base_url, _user(text)).json()["choices"][0]["message"]["content"] == label
        assert proc.stats["requests"] == 1
        child = proc.proc
    assert child.poll() is not None  # stopped on exit
