"""Row parsers of the log formats (see :mod:`downsize.discover.readers` for the formats)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from ..errors import DataError
from ._records import BadRow, FileReport, LogRecord

__all__ = [
    "ROW_PARSERS",
    "BadRow",
    "BatchJoin",
    "add_notes",
    "parse_chat_pairs",
    "parse_downsize",
    "parse_litellm",
    "read_store",
]

NO_TEXT_DOWNSIZE = "pass-through rows without stored text"
NO_PROMPT_LITELLM = "rows without a stored prompt"
FAILED = "failed requests (no answer)"
TASK_ROWS = "rows of downsize tasks (already distilled)"


# -- small helpers ------------------------------------------------------------------------
def _text(content: Any) -> str:
    """Message content as text: a string, or the text parts of a list of content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content
                         if not isinstance(p, dict) or "text" in p)
    return str(content)


def _messages(msgs: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(msgs, list) or not msgs:
        raise BadRow("no messages")
    out = []
    for m in msgs:
        if not isinstance(m, dict):
            raise BadRow(f"a message is a {type(m).__name__}, not an object")
        out.append((str(m.get("role", "user")), _text(m.get("content"))))
    return tuple(out)


def _maybe_json(v: Any) -> Any:
    if isinstance(v, (str, bytes)) and v[:1] in ("{", "[", b"{", b"["):
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError:
            return v
    return v


def _int(v: Any) -> int | None:
    try:
        return None if v is None or v == "" else int(float(v))
    except (TypeError, ValueError):
        return None


def _id(v: Any) -> str | None:
    return None if v in (None, "") else str(v)


def _float(v: Any) -> float | None:
    try:
        return None if v is None or v == "" else float(v)
    except (TypeError, ValueError):
        return None


def parse_ts(v: Any) -> datetime | None:
    """ISO 8601 text (``Z`` allowed), Unix seconds, or a datetime, as naive UTC; None if unreadable."""
    if v is None or v == "":
        return None
    if isinstance(v, datetime):
        dt = v
    elif isinstance(v, (int, float)) or (isinstance(v, str) and v.replace(".", "", 1).isdigit()):
        x = float(v)
        dt = datetime.fromtimestamp(x / 1000 if x > 1e11 else x, tz=UTC)
    else:
        try:
            dt = datetime.fromisoformat(str(v).strip().replace("Z", "+00:00").replace(" ", "T", 1))
        except ValueError:
            return None
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt


def _chat_answer(body: Any) -> tuple[str | None, int | None, int | None, str, datetime | None]:
    """(answer, input tokens, output tokens, model, created) of a chat.completion or Responses body."""
    if isinstance(body, str):
        return body, None, None, "", None
    if not isinstance(body, dict):
        return None, None, None, "", None
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    tin = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
    tout = _int(usage.get("completion_tokens", usage.get("output_tokens")))
    answer = None
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        msg = choices[0].get("message")
        answer = _text(msg.get("content")) if isinstance(msg, dict) else _text(choices[0].get("text"))
    elif isinstance(body.get("output"), list):  # Responses API
        parts = [c.get("text", "") for o in body["output"] if isinstance(o, dict)
                 for c in (o.get("content") or []) if isinstance(c, dict) and c.get("type") == "output_text"]
        answer = "".join(parts) if parts else None
    elif isinstance(body.get("output_text"), str):
        answer = body["output_text"]
    return answer, tin, tout, str(body.get("model") or ""), parse_ts(body.get("created") or body.get("created_at"))


def _request_messages(body: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Messages of a chat.completions body, or of a Responses API body (``instructions`` + ``input``)."""
    if "messages" in body:
        return _messages(body["messages"])
    if "input" in body:
        inp = body["input"]
        msgs: list[tuple[str, str]] = []
        if body.get("instructions"):
            msgs.append(("system", _text(body["instructions"])))
        if isinstance(inp, str):
            msgs.append(("user", inp))
        else:
            msgs.extend(_messages(inp))
        return tuple(msgs)
    raise BadRow("request has no messages (nor Responses API input)")


# -- chat pairs ----------------------------------------------------------------------------
def parse_chat_pairs(obj: Any, source: str, rep: FileReport) -> LogRecord | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("request"), dict):
        raise BadRow("expected an object with a 'request' object and a 'response'")
    req = obj["request"]
    msgs = _request_messages(req)
    resp = _maybe_json(obj.get("response"))
    answer, tin, tout, rmodel, created = _chat_answer(resp)
    if answer is None:
        rep.skip(FAILED)
        return None
    rid = obj.get("id") or (resp.get("id") if isinstance(resp, dict) else None)
    return LogRecord(msgs, answer, str(req.get("model") or rmodel), tin, tout,
                     _float(obj.get("latency_ms")), parse_ts(obj.get("timestamp", obj.get("ts"))) or created,
                     source=source, id=_id(rid))


# -- LiteLLM spend logs ----------------------------------------------------------------------
def parse_litellm(obj: Any, source: str, rep: FileReport) -> LogRecord | None:
    if not isinstance(obj, dict) or "request_id" not in obj:
        raise BadRow("expected a LiteLLM spend-log row (with request_id)")
    call = str(obj.get("call_type") or "")
    if call and "completion" not in call and "responses" not in call:
        rep.skip(f"calls other than completions ({call})")
        return None
    req = _maybe_json(obj.get("messages"))
    body: Any = None
    if isinstance(req, list) and req:
        msgs = _messages(req)
    else:
        body = _maybe_json(obj.get("proxy_server_request"))
        if not (isinstance(body, dict) and body):
            meta = _maybe_json(obj.get("metadata"))
            body = _maybe_json(meta.get("proxy_server_request")) if isinstance(meta, dict) else None
        if not (isinstance(body, dict) and ("messages" in body or "input" in body)):
            rep.skip(NO_PROMPT_LITELLM)
            return None
        msgs = _request_messages(body)
    if str(obj.get("status") or "success").lower() not in ("success", ""):
        rep.skip(FAILED)
        return None
    answer, tin, tout, rmodel, _ = _chat_answer(_maybe_json(obj.get("response")))
    if not answer:
        rep.skip(FAILED)
        return None
    start, end = parse_ts(obj.get("startTime")), parse_ts(obj.get("endTime"))
    latency = _float(obj.get("request_duration_ms"))
    if latency is None and start and end:
        latency = (end - start).total_seconds() * 1000
    model = str(obj.get("model") or obj.get("model_group") or (body or {}).get("model") or rmodel)
    return LogRecord(msgs, answer, model, _int(obj.get("prompt_tokens")) or tin,
                     _int(obj.get("completion_tokens")) or tout, latency, start,
                     _float(obj.get("spend")), source=source, id=_id(obj.get("request_id")))


# -- downsize gateway log ---------------------------------------------------------------------
def parse_downsize(obj: Any, source: str, rep: FileReport) -> LogRecord | None:
    if not isinstance(obj, dict) or "answered_by" not in obj:
        raise BadRow("expected a downsize request_log row (with answered_by)")
    if obj.get("task") not in (None, ""):
        rep.skip(TASK_ROWS)
        return None
    if obj.get("answered_by") != "passthrough":
        rep.skip(FAILED)
        return None
    text, answer = obj.get("input_text"), obj.get("answer")
    if text in (None, "") or answer is None:
        rep.skip(NO_TEXT_DOWNSIZE)
        return None
    return LogRecord((("user", str(text)),), str(answer), str(obj.get("model") or ""),
                     _int(obj.get("teacher_input_tokens")), _int(obj.get("teacher_output_tokens")),
                     _float(obj.get("latency_ms")), parse_ts(obj.get("ts")), _float(obj.get("teacher_cost_usd")),
                     source=source, id=_id(obj.get("request_id")))


def read_store(url: str, rep: FileReport, *, chunk: int = 5000) -> Iterator[LogRecord]:
    """Pass-through rows of a downsize store's ``request_log``, read-only, in id order."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.exc import SQLAlchemyError

    from ..store import RequestLog

    if not url.startswith("sqlite:"):
        url = f"sqlite:///file:{url}?mode=ro&uri=true"
    cols = [RequestLog.id, RequestLog.request_id, RequestLog.task, RequestLog.answered_by, RequestLog.model,
            RequestLog.input_text,
            RequestLog.answer, RequestLog.teacher_input_tokens, RequestLog.teacher_output_tokens,
            RequestLog.latency_ms, RequestLog.ts, RequestLog.teacher_cost_usd]
    names = [c.key for c in cols]
    engine = create_engine(url)
    after = 0
    try:
        with engine.connect() as conn:
            n_task = conn.execute(select(RequestLog.id).where(RequestLog.task.is_not(None)).limit(1)).first()
            while True:
                q = (select(*cols).where(RequestLog.task.is_(None), RequestLog.id > after)
                     .order_by(RequestLog.id).limit(chunk))
                rows = conn.execute(q).all()
                if not rows:
                    break
                for r in rows:
                    d = dict(zip(names, r))
                    rep.lines += 1
                    rec = parse_downsize(d, f"request_log:{d['id']}", rep)
                    if rec is not None:
                        rep.records += 1
                        yield rec
                after = rows[-1][0]
    except SQLAlchemyError as exc:
        raise DataError(f"{url}: cannot read request_log: {str(exc).splitlines()[0]}") from None
    finally:
        engine.dispose()
    if n_task is not None:
        rep.notes.append("rows of downsize tasks were not read (their calls are distilled already)")


# -- OpenAI Batch API -------------------------------------------------------------------------
class BatchJoin:
    """Joins Batch API input and output lines on ``custom_id`` across files."""

    def __init__(self) -> None:
        self._inputs: dict[str, tuple[dict[str, Any], str, FileReport]] = {}
        self._outputs: dict[str, tuple[dict[str, Any], FileReport]] = {}
        self._order: list[str] = []

    def add_file(self, name: str, rows: Iterable[tuple[int, Any]], rep: FileReport) -> None:
        for line, obj in rows:
            if not isinstance(obj, dict) or not isinstance(obj.get("custom_id"), str):
                rep.add_bad(line, "no custom_id")
                continue
            cid = obj["custom_id"]
            if "body" in obj:
                if not isinstance(obj["body"], dict):
                    rep.add_bad(line, "body is not an object")
                    continue
                if cid in self._inputs:
                    rep.add_bad(line, f"custom_id {cid!r} repeated (first at {self._inputs[cid][1]})")
                    continue
                url = str(obj.get("url") or "/v1/chat/completions")
                if not url.endswith(("/chat/completions", "/responses")):
                    rep.skip(f"requests to {url}")
                    continue
                self._inputs[cid] = (obj["body"], f"{name}:{line}", rep)
                self._order.append(cid)
            elif "response" in obj or "error" in obj:
                self._outputs[cid] = (obj, rep)
            else:
                rep.add_bad(line, "neither a request (body) nor a result (response/error)")

    def records(self) -> Iterator[LogRecord]:
        for cid in self._order:
            body, source, rep = self._inputs[cid]
            try:
                msgs = _request_messages(body)
            except BadRow as exc:
                rep.add_bad(int(source.rsplit(":", 1)[1]), str(exc))
                continue
            out = self._outputs.pop(cid, None)
            if out is None:
                rep.skip("requests without a result line (output file not given?)")
                continue
            obj, orep = out
            resp = obj.get("response") if isinstance(obj.get("response"), dict) else None
            if obj.get("error") or resp is None or _int(resp.get("status_code")) not in (200, None):
                orep.skip(FAILED)
                continue
            answer, tin, tout, rmodel, created = _chat_answer(resp.get("body"))
            if answer is None:
                orep.skip(FAILED)
                continue
            rep.records += 1
            yield LogRecord(msgs, answer, str(body.get("model") or rmodel), tin, tout, None, created,
                            batch=True, source=source, id=cid)
        for obj, orep in self._outputs.values():
            orep.skip("results whose custom_id is in no input file given")
        self._outputs.clear()


ROW_PARSERS = {"chat_pairs": parse_chat_pairs, "litellm": parse_litellm, "downsize": parse_downsize}


def add_notes(rep: FileReport) -> None:
    """Turn skip counts into what to do about them."""
    if rep.skipped.get(NO_TEXT_DOWNSIZE):
        rep.notes.append("pass-through texts are absent: set `server.log_passthrough_text: true` in downsize.yaml "
                         "(off by default: only a hash is logged) and let traffic flow through `downsize serve`")
    if rep.skipped.get(NO_PROMPT_LITELLM):
        rep.notes.append("prompts are absent: LiteLLM stores them only with `general_settings: "
                         "store_prompts_in_spend_logs: true` (off by default)")
    if rep.records == 0 and not rep.bad_count and not rep.skipped:
        rep.notes.append("no rows")
