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
from downsize.config import ClassifyTask
from downsize.data import read_texts
from downsize._uvicorn import ServerThread as _ServerThread
from downsize.replay import ReplayServer
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
def r8_task() -> ClassifyTask:
    return ClassifyTask(instructions="Route the news story to its topic.", labels=R8_LABELS)


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


# =====================================================================================
# gateway (test_server*.py): a labelled, trained and calibrated Reuters task, built once
# =====================================================================================
@dataclass
class GatewayProject:
    """A calibrated ``news`` task (tfidf) built once per session; each user copies its store.

    ``confident`` texts are answered by the student, ``unsure`` ones go to the teacher.
    """

    dir: Path
    db: Path
    records: dict[str, str]
    confident: list[str]
    unsure: list[str]
    threshold: float

    def config(self, tmp_path: Path, teacher_url: str, *, task: dict[str, Any] | None = None,
               server: dict[str, Any] | None = None, teacher: dict[str, Any] | None = None,
               teachers: dict[str, Any] | None = None, tasks: dict[str, Any] | None = None) -> Any:
        """A Config for a fresh copy of the store under ``tmp_path``, teacher at ``teacher_url``."""
        import shutil

        from downsize.config import Config

        db = tmp_path / "gateway.db"
        if not db.exists():
            shutil.copyfile(self.db, db)
        return Config.model_validate({
            "store": f"sqlite:///{db}",
            "home": str(self.dir / ".downsize"),
            "teachers": {"default": {"base_url": teacher_url, "model": "replay-gpt", "price_per_1m_input": 2.5,
                                     "price_per_1m_output": 10.0, "max_concurrency": 64, "timeout_s": 5,
                                     "max_retries": 1, **(teacher or {})}, **(teachers or {})},
            "tasks": {"news": {"instructions": "Route the newswire story to its desk.", "labels": R8_LABELS,
                               "student": "tfidf", "alpha": 0.05, "spot_check_rate": 0.0, **(task or {})},
                      **(tasks or {})},
            "server": {"rate_limit_per_minute": 1_000_000, **(server or {})},
        })


@pytest.fixture(scope="session")
def gateway_project(tmp_path_factory: pytest.TempPathFactory) -> GatewayProject:
    from downsize.config import load_config
    from downsize.project import Project

    d = tmp_path_factory.mktemp("gateway-project")
    data = read_texts(REUTERS_DEMO, label_col="label")
    held_out = read_texts(REUTERS_DEMO.with_name("reuters_r8_demo-test.csv.gz"), label_col="label")
    records = {**dict(zip(held_out.texts, held_out.labels or [])), **dict(zip(data.texts, data.labels or []))}
    labels_yaml = "{" + ", ".join(f"{k}: x" for k in R8_LABELS) + "}"
    with ReplayServer(records) as srv:
        (d / "downsize.yaml").write_text(
            "store: sqlite:///.downsize/downsize.db\nteachers:\n  default:\n"
            f"    base_url: {srv.base_url}\n    model: replay-gpt\n    price_per_1m_input: 2.5\n"
            "    price_per_1m_output: 10\n    max_concurrency: 32\n"
            f"tasks:\n  news:\n    instructions: Route the newswire story to its desk.\n    labels: {labels_yaml}\n"
            "    student: tfidf\n    alpha: 0.05\n"
            # a held-out split: cross-fitted, this student answers 799 of the 800 held-out texts, and the
            # gateway tests need both confident and unsure ones
            "    calibration_folds: 0\n")
        with Project.open(d / "downsize.yaml") as p:
            p.label("news", REUTERS_DEMO, progress=False)
            p.train("news", kind="tfidf")
            run, _ = p.calibrate("news")
            conf = [s.confidence for s in p.cascade("news").score(held_out.texts)]
    assert run.threshold is not None, "the gateway tests need a task with a threshold"
    confident = [t for t, c in zip(held_out.texts, conf) if c >= run.threshold]
    unsure = [t for t, c in zip(held_out.texts, conf) if c < run.threshold]
    assert len(confident) > 100 and len(unsure) >= 25, (len(confident), len(unsure))
    load_config(d / "downsize.yaml")
    return GatewayProject(d, d / ".downsize" / "downsize.db", records, confident, unsure, float(run.threshold))
