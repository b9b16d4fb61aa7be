"""Shared fixtures. Each group is owned by the module(s) named in its header; add yours as a new group."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

# =====================================================================================
# teacher / replay / labeling: data, the replay teacher, and a scripted fault server
# =====================================================================================
from downsize.config import TaskConfig
from downsize.data import read_texts
from downsize.replay import ReplayServer, _ServerThread
from downsize.store import Store

REUTERS_DEMO = Path(__file__).resolve().parents[1] / "src" / "downsize" / "_assets" / "reuters_r8_demo-train.csv.gz"
R8_LABELS = {
    "earn": "earnings, dividends, results",
    "acq": "mergers and acquisitions",
    "crude": "crude oil",
    "trade": "international trade",
    "money-fx": "money markets and foreign exchange",
    "interest": "interest rates",
    "ship": "shipping",
    "grain": "grain and crops",
}


@pytest.fixture(scope="session")
def reuters_rows() -> tuple[list[str], list[str]]:
    """The first 300 rows (texts, labels) of the bundled Reuters R8 demo file."""
    data = read_texts(REUTERS_DEMO, label_col="label", limit=300)
    return data.texts, data.labels or []


@pytest.fixture(scope="session")
def reuters_records(reuters_rows: tuple[list[str], list[str]]) -> dict[str, str]:
    texts, labels = reuters_rows
    return dict(zip(texts, labels))


@pytest.fixture(scope="session")
def r8_task() -> TaskConfig:
    return TaskConfig(instructions="Route the news story to its topic.", labels=R8_LABELS)


@pytest.fixture
def tmp_store(tmp_path: Path) -> Iterator[Store]:
    """A fresh SQLite store in a file under tmp_path."""
    with Store(f"sqlite:///{tmp_path / 'downsize.db'}") as s:
        yield s


@pytest.fixture
def replay_teacher(reuters_records: dict[str, str]) -> Iterator[ReplayServer]:
    """A fresh replay teacher (its request counter starts at 0) on loopback."""
    with ReplayServer(reuters_records) as srv:
        yield srv


@dataclass
class Plan:
    """A scripted endpoint of the fault server: request i gets ``actions[min(i, len - 1)]``.

    Actions (dicts): ``{"content": str}`` a 200 chat completion; ``{"status": int,
    "body": str | dict, "headers": {...}}`` a raw answer; ``"sleep": s`` first;
    ``"echo_auth": True`` puts the request's Authorization header in the body;
    ``"reject_json_schema": True`` answers a json_schema response_format the way
    llama-cpp-python 0.3.36 does (HTTP 500 naming response_format).
    """

    id: str
    actions: list[dict[str, Any]]
    base_url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    @property
    def count(self) -> int:
        return len(self.requests)


class FaultServer(_ServerThread):
    """A purpose-built OpenAI-compatible server on loopback that fails on cue."""

    def __init__(self) -> None:
        app = FastAPI()
        self.plans: dict[str, Plan] = {}
        self._ids = itertools.count(1)

        @app.post("/p/{pid}/v1/chat/completions")
        async def chat(pid: str, request: Request) -> Response:
            plan = self.plans[pid]
            raw = await request.body()
            try:
                body = json.loads(raw)
            except ValueError:
                body = {"_raw": raw.decode("utf-8", "replace")}
            i = len(plan.requests)
            plan.requests.append(body)
            plan.headers.append(dict(request.headers))
            action = plan.actions[min(i, len(plan.actions) - 1)]
            plan.in_flight += 1
            plan.max_in_flight = max(plan.max_in_flight, plan.in_flight)
            try:
                if action.get("sleep"):
                    await asyncio.sleep(action["sleep"])
            finally:
                plan.in_flight -= 1
            rf = body.get("response_format") or {}
            if action.get("reject_json_schema") and rf.get("type") == "json_schema":
                msg = ("1 validation error:\n  {'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
                       "'msg': \"Input should be 'text' or 'json_object'\"}")
                return Response(json.dumps({"error": {"message": msg, "type": "internal_server_error"}}),
                                status_code=500, media_type="application/json")
            if "content" in action:
                content = action["content"]
                chars = sum(len(str(m.get("content", ""))) for m in body.get("messages", []))
                out = {
                    "id": f"chatcmpl-fault-{i}", "object": "chat.completion", "model": body.get("model"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": max(1, math.ceil(chars / 4)),
                              "completion_tokens": max(1, math.ceil(len(content) / 4))},
                }
                return Response(json.dumps(out), media_type="application/json")
            payload = action.get("body", "")
            if action.get("echo_auth"):
                payload = {"error": {"message": f"bad key {request.headers.get('authorization')}"}}
            text = payload if isinstance(payload, str) else json.dumps(payload)
            return Response(text, status_code=action.get("status", 200), headers=action.get("headers"),
                            media_type="application/json")

        super().__init__(app)

    def plan(self, *actions: dict[str, Any]) -> Plan:
        pid = str(next(self._ids))
        p = Plan(pid, list(actions), f"{self.url}/p/{pid}/v1")
        self.plans[pid] = p
        return p


@pytest.fixture(scope="session")
def fault_server() -> Iterator[FaultServer]:
    with FaultServer() as srv:
        yield srv
