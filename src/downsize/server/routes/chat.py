"""``POST /v1/chat/completions``: OpenAI's chat completions, answered by a task's cascade
(``model: downsize/<task>``) or passed through to the default teacher (any other model)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from ...audit import AuditRecord
from ...cascade import AnsweredBy, Decision
from ...errors import TeacherError
from ...store import text_hash
from ...teacher.prompt import content_text
from .._body import check_content_type, check_text, dumps, parse_json, validate
from .._deps import Client, ClientDep
from .._errors import ApiError, teacher_error
from .._gateway import Gateway
from .._runtime import TaskRuntime
from .._schemas import ChatCompletion, ChatCompletionRequest, ErrorBody
from .._teacher import DEADLINE

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["chat"])

_PREFIX = "downsize/"
#: Request fields the gateway handles itself; the rest go to the teacher as they are.
_OWN_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "response_format", "max_tokens", "self"})
_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 401, 404, 413, 415, 429, 502, 503, 504)
}


def _sse(chunks: list[dict[str, Any]]) -> bytes:
    return b"".join(b"data: " + dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def _completion_body(rid: str, model: str, message: dict[str, Any], finish: str, usage: dict[str, int],
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage, "system_fingerprint": None,
    }
    if extra:
        body.update(extra)
    return body


def _stream_body(rid: str, model: str, choices: list[tuple[dict[str, Any], str]], usage: dict[str, int] | None,
                 include_usage: bool) -> bytes:
    """A finished answer as server-sent events: per choice a content chunk and a finish chunk, then [DONE]."""
    created = int(time.time())
    base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None}
    chunks: list[dict[str, Any]] = []
    for i, (message, finish) in enumerate(choices):
        content = message.get("content")
        delta: dict[str, Any] = {"role": "assistant", "content": content if isinstance(content, str) else ""}
        if isinstance(message.get("tool_calls"), list):
            delta["tool_calls"] = [{"index": j, **tc} for j, tc in enumerate(message["tool_calls"])
                                   if isinstance(tc, dict)]
        chunks.append({**base, "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}]})
        chunks.append({**base, "choices": [{"index": i, "delta": {}, "logprobs": None, "finish_reason": finish}]})
    if include_usage:
        for c in chunks:
            c["usage"] = None
        chunks.append({**base, "choices": [], "usage": usage})
    return _sse(chunks)


def _usage(d: Decision) -> dict[str, int]:
    return {"prompt_tokens": d.teacher_input_tokens, "completion_tokens": d.teacher_output_tokens,
            "total_tokens": d.teacher_input_tokens + d.teacher_output_tokens}


@router.post(
    "/chat/completions",
    summary="Chat completion (OpenAI-compatible)",
    response_model=ChatCompletion,
    responses=_ERRORS,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": ChatCompletionRequest.model_json_schema()}
    }}},
)
async def chat_completions(request: Request, client: ClientDep) -> Response:
    """Answer ``downsize/<task>`` with the task's answer; pass any other model to the default teacher.

    The answer is the message content: a classify task's label (or ``{"label": ...}`` when
    ``response_format`` asks for JSON); for multi-label and extraction tasks always JSON
    (``{"labels": [...]}``, the fields object, ``{"entities": [...]}``); headers ``x-downsize-answered-by``, ``x-downsize-confidence``, ``x-downsize-cost-usd``
    say who answered, how sure the student was and what the answer cost.
    """
    t0 = time.perf_counter()
    gw = client.gateway
    rid = gw.new_id("chatcmpl-")
    body = await request.body()
    rt: TaskRuntime | None = None
    model = ""
    text: str | None = None
    try:
        check_content_type(request.headers.get("content-type"))
        obj = parse_json(body)
        if isinstance(obj, dict) and isinstance(obj.get("model"), str):
            model = obj["model"]
            if model.startswith(_PREFIX):
                rt = gw.tasks.get(model[len(_PREFIX):])
        req = validate(ChatCompletionRequest, obj)
        if rt is None:
            if model.startswith(_PREFIX) or gw.default_teacher is None:
                known = ", ".join(f"{_PREFIX}{t}" for t in gw.tasks) or "none"
                why = f"no task {model[len(_PREFIX):]!r} is configured" if model.startswith(_PREFIX) else \
                    "this gateway has no default teacher to pass other models to (server.default_teacher)"
                raise ApiError(404, f"The model {model!r} does not exist: {why} (models: {known})",
                               param="model", code="model_not_found")
            return await _passthrough(gw, obj, req, rid, client, t0, body)
        if req.n is not None and req.n > 1:
            raise ApiError(400, f"n: a downsize task answers with one choice, not {req.n}", param="n",
                           code="invalid_request")
        users = [m for m in req.messages if m.role == "user"]
        if not users:
            raise ApiError(400, "messages: there is no user message (the text to classify is the last user "
                           "message's content)", param="messages", code="invalid_request")
        text = check_text(content_text(users[-1].content), param=f"messages.{req.messages.index(users[-1])}.content")
        _check_schema(rt, req)
        token = DEADLINE.set(asyncio.get_running_loop().time() + gw.config.server.deadline_s)
        try:
            d = await rt.answer(text)
        except TeacherError as exc:  # shadow mode without a student: nothing else can answer
            raise teacher_error(exc, teacher=rt.teacher.name) from None
        finally:
            DEADLINE.reset(token)
    except Exception as exc:  # audited, then answered by the error handlers
        status, message = (exc.status, exc.message) if isinstance(exc, ApiError) else (500, type(exc).__name__)
        if isinstance(exc, ApiError):
            exc.headers.setdefault("x-request-id", rid)
            exc.audited = True
        gw.record_error(task=rt.name if rt else None, model=model or "?", input_hash=_hash(text, body),
                        text=text, status=status, message=message, request_id=rid,
                        key_id=client.key_id, latency_ms=(time.perf_counter() - t0) * 1000)
        raise

    json_out = req.response_format is not None and req.response_format.type != "text"
    content = rt.cfg.render(d.answer, json_mode=json_out)
    message = {"role": "assistant", "content": content, "refusal": None}
    conf = d.confidence
    headers = {"x-request-id": rid, "x-downsize-answered-by": d.answered_by.value,
               "x-downsize-cost-usd": f"{d.teacher_cost_usd:.8f}"}
    if conf is not None:
        headers["x-downsize-confidence"] = f"{conf:.6f}"
    usage = _usage(d)
    if req.stream:
        include = bool(req.stream_options and req.stream_options.include_usage)
        resp = Response(_stream_body(rid, model, [(message, "stop")], usage, include), media_type="text/event-stream",
                        headers={**headers, "cache-control": "no-cache"})
    else:
        info = {"downsize": {"answered_by": d.answered_by.value, "confidence": conf, "cost_usd": d.teacher_cost_usd,
                             "reason": gw.redact(d.reason)}}
        resp = Response(dumps(_completion_body(rid, model, message, "stop", usage, info)),
                        media_type="application/json", headers=headers)
    gw.record(rt, text, d, request_id=rid, key_id=client.key_id, latency_ms=(time.perf_counter() - t0) * 1000)
    if d.answered_by is AnsweredBy.STUDENT:
        gw.maybe_spot_check(rt, text, d, rid)
    return resp


def _check_schema(rt: TaskRuntime, req: ChatCompletionRequest) -> None:
    """A ``json_schema`` response_format must admit the task's answers (checked before anything is
    paid for): its properties must include the kind's keys, and it may require no other."""
    rf = req.response_format
    if rf is None or rf.type != "json_schema":
        return
    spec = (rf.model_extra or {}).get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        return  # no schema given: the kind's own
    ours = rt.cfg.answer_schema()
    keys = set(ours.get("properties", {}))
    props = schema.get("properties")
    required = schema.get("required") if isinstance(schema.get("required"), list) else []
    missing = sorted(keys - set(props)) if isinstance(props, dict) and schema.get("additionalProperties") is False else []
    extra = sorted(set(map(str, required)) - keys)
    if missing or extra:
        why = f"it forbids {missing}" if missing else f"it requires {extra}"
        raise ApiError(400, f"response_format: the schema does not fit task {rt.name!r}'s answers ({why}); "
                       f"its answers follow this schema: {dumps(ours).decode()[:400]}",
                       param="response_format", code="invalid_request")


def _hash(text: str | None, body: bytes) -> str:
    return text_hash(text) if text is not None else hashlib.sha256(body).hexdigest()


async def _passthrough(gw: Gateway, obj: dict[str, Any], req: ChatCompletionRequest, rid: str, client: Client,
                       t0: float, body: bytes) -> Response:
    """Send the request to the default teacher as it is (its model) and relay the answer."""
    teacher = gw.default_teacher
    assert teacher is not None
    users = [m for m in req.messages if m.role == "user"]
    text = content_text(users[-1].content) if users else None
    extra = {k: v for k, v in obj.items() if k not in _OWN_FIELDS}
    token = DEADLINE.set(asyncio.get_running_loop().time() + gw.config.server.deadline_s)
    try:
        res = await teacher.chat(obj["messages"], response_format=obj.get("response_format"),
                                 max_tokens=req.max_tokens, **extra)
    except TeacherError as exc:
        raise teacher_error(exc, teacher=teacher.name) from None
    finally:
        DEADLINE.reset(token)
    raw = res.raw if isinstance(res.raw, dict) else {}
    choices = [(c.get("message") if isinstance(c.get("message"), dict) else {"role": "assistant", "content": ""},
                c.get("finish_reason") or "stop")
               for c in (raw.get("choices") or []) if isinstance(c, dict)]
    choices = choices or [({"role": "assistant", "content": res.content}, "stop")]
    cost = teacher.cfg.cost(res.input_tokens, res.output_tokens)
    usage = {"prompt_tokens": res.input_tokens, "completion_tokens": res.output_tokens,
             "total_tokens": res.input_tokens + res.output_tokens}
    headers = {"x-request-id": rid, "x-downsize-answered-by": AnsweredBy.PASSTHROUGH.value, "x-downsize-cost-usd": f"{cost:.8f}"}
    out_model = str(raw.get("model") or teacher.model)
    if req.stream:
        include = bool(req.stream_options and req.stream_options.include_usage)
        resp = Response(_stream_body(rid, out_model, choices, usage, include),
                        media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})
    else:
        resp = Response(dumps(raw) if raw else dumps(_completion_body(rid, out_model, *choices[0], usage)),
                        media_type="application/json", headers=headers)
    latency_ms = (time.perf_counter() - t0) * 1000
    log_text = gw.config.server.log_passthrough_text
    gw.writer.submit(AuditRecord(
        request_id=rid, task=None, model=req.model[:255], input_hash=_hash(text, body),
        input_text=text if log_text else None, answer=res.content if log_text else None,
        answered_by=AnsweredBy.PASSTHROUGH, reason=f"model {req.model!r} is not a downsize task: passed to teacher "
        f"{teacher.name!r}"[:255], teacher_input_tokens=res.input_tokens, teacher_output_tokens=res.output_tokens,
        teacher_cost_usd=cost, teacher_only_cost_usd=cost, latency_ms=latency_ms, teacher_latency_ms=res.latency_ms,
        client_key_id=client.key_id,
    ))
    gw.metrics.observe(None, AnsweredBy.PASSTHROUGH, latency_ms / 1000, cost=cost, teacher_only=cost,
                       teacher_s=res.latency_ms / 1000, purpose="passthrough")
    return resp
