"""``POST /v1/tasks/{task}/predict``: a batch of texts through one task's cascade."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...cascade import AnsweredBy, Decision
from ...errors import TeacherError
from ...store import text_hash
from .._body import check_content_type, check_text, dumps, parse_json, validate
from .._deps import ClientDep
from .._errors import ApiError, teacher_error
from .._schemas import ErrorBody, PredictRequest, PredictResponse
from .._teacher import DEADLINE

__all__ = ["router"]

router = APIRouter(prefix="/v1/tasks", tags=["tasks"])


@router.post(
    "/{task}/predict",
    summary="Classify a batch of texts",
    response_model=PredictResponse,
    responses={s: {"model": ErrorBody} for s in (400, 401, 404, 413, 415, 429)},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": PredictRequest.model_json_schema()}}}},
)
async def predict(task: str, request: Request, client: ClientDep) -> Response:
    """Per input: label, confidence, answered_by, latency_ms, cost_usd (and ``error`` if it failed).

    Inputs are answered concurrently (the student scores them in one batch); each gets its
    own audit row, with request id ``<id>.<index>``.
    """
    gw = client.gateway
    t0 = time.perf_counter()
    rid = gw.new_id("pred-")
    rt = gw.tasks.get(task)
    if rt is None:
        known = ", ".join(gw.tasks) or "none"
        raise ApiError(404, f"no task {task!r} is configured (tasks: {known})", param="task", code="task_not_found")
    body = await request.body()
    try:
        check_content_type(request.headers.get("content-type"))
        req = validate(PredictRequest, parse_json(body))
        limit = gw.config.server.max_batch
        if len(req.inputs) > limit:
            raise ApiError(400, f"inputs: {len(req.inputs)} texts, more than the limit of {limit} "
                           "(server.max_batch)", param="inputs", code="batch_too_large")
        texts = [check_text(x, param=f"inputs.{i}") for i, x in enumerate(req.inputs)]
    except ApiError as exc:
        gw.record_error(task=task, model=f"downsize/{task}", input_hash=hashlib.sha256(body).hexdigest(), text=None,
                        status=exc.status, message=exc.message, request_id=rid, key_id=client.key_id,
                        latency_ms=(time.perf_counter() - t0) * 1000)
        exc.audited = True
        raise
    token = DEADLINE.set(asyncio.get_running_loop().time() + gw.config.server.deadline_s)
    try:
        got = await asyncio.gather(*(rt.answer(x) for x in texts), return_exceptions=True)
    finally:
        DEADLINE.reset(token)
    latency_ms = (time.perf_counter() - t0) * 1000
    results: list[dict[str, Any]] = []
    for i, (x, d) in enumerate(zip(texts, got)):
        sub = f"{rid}.{i}"
        if isinstance(d, Decision):
            gw.record(rt, x, d, request_id=sub, key_id=client.key_id, latency_ms=latency_ms)
            if d.answered_by is AnsweredBy.STUDENT:
                gw.maybe_spot_check(rt, x, d, sub)
            results.append({rt.cfg.answer_key: rt.cfg.answer_value(d.answer),
                            "confidence": d.confidence, "answered_by": d.answered_by.value,
                            "latency_ms": round(latency_ms, 3), "cost_usd": d.teacher_cost_usd, "error": None})
            continue
        if isinstance(d, TeacherError):
            err = teacher_error(d, teacher=rt.teacher.name)
        elif isinstance(d, Exception):
            err = ApiError(500, f"internal error: {type(d).__name__}")
        else:  # CancelledError and friends
            raise d
        gw.record_error(task=task, model=f"downsize/{task}", input_hash=text_hash(x), text=x, status=err.status,
                        message=err.message, request_id=sub, key_id=client.key_id, latency_ms=latency_ms)
        results.append({rt.cfg.answer_key: None, "confidence": None, "answered_by": AnsweredBy.ERROR.value, "latency_ms": round(latency_ms, 3),
                        "cost_usd": 0.0, "error": gw.redact(err.message)})
    out = {"id": rid, "task": task, "model": f"downsize/{task}", "results": results}
    return Response(dumps(out), media_type="application/json", headers={"x-request-id": rid})
