"""Reading request bodies: JSON that is valid UTF-8 all through, validated into a model, with
OpenAI-style 400s that name the parameter. Done by hand rather than by FastAPI's body
parameters so that a request's task is known (and audited) even when the rest is malformed."""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ._errors import ApiError

__all__ = ["parse_json", "validate", "check_text", "check_content_type", "dumps"]

M = TypeVar("M", bound=BaseModel)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")

try:  # optional speed-up
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None  # type: ignore[assignment]


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes (orjson when installed)."""
    if _orjson is not None:
        try:
            return _orjson.dumps(obj)
        except TypeError:
            pass
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _no_surrogates(obj: Any, depth: int = 0) -> bool:
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")
            return True
        except UnicodeEncodeError:
            return False
    if isinstance(obj, dict):
        return all(_no_surrogates(k, depth) and _no_surrogates(v, depth + 1) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_no_surrogates(v, depth + 1) for v in obj)
    return True


def parse_json(body: bytes) -> Any:
    """The JSON value of a request body.

    Raises
    ------
    ApiError
        400 for an empty body, invalid JSON or UTF-8, nesting too deep, or a lone surrogate
        escape (text that cannot be stored or forwarded).
    """
    if not body.strip():
        raise ApiError(400, "the request body is empty: send a JSON object", code="invalid_json")
    try:
        # strict UTF-8 first: json.loads(bytes) would let encoded surrogates through ('surrogatepass')
        obj = _orjson.loads(body) if _orjson is not None else json.loads(body.decode("utf-8"))
    except RecursionError:
        raise ApiError(400, "the request body nests too deeply", code="invalid_json") from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError, orjson errors, huge ints
        msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ApiError(400, f"the request body is not valid JSON: {msg}", code="invalid_json") from None
    if _SURROGATE_ESCAPE.search(body) and not _no_surrogates(obj):
        raise ApiError(400, "the request body contains a lone UTF-16 surrogate (\\ud800-\\udfff) "
                       "that is not valid Unicode text", code="invalid_json")
    return obj


def validate(model: type[M], obj: Any) -> M:
    """``obj`` as ``model``, or a 400 naming the first bad parameter."""
    if not isinstance(obj, dict):
        raise ApiError(400, f"the request body must be a JSON object, not {type(obj).__name__}",
                       code="invalid_request")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=True)
        first = errors[0] if errors else {"loc": (), "msg": "invalid"}
        param = ".".join(str(p) for p in first["loc"]) or None
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        got = _got(first)
        raise ApiError(400, f"{param or 'body'}: {first['msg']}{got}{more}", param=param,
                       code="invalid_request") from None
    except RecursionError:
        raise ApiError(400, "the request body nests too deeply", code="invalid_request") from None


def _got(error: dict[str, Any]) -> str:
    """`` (got the string 'yes')`` for a value of the wrong type (not for missing fields or objects)."""
    if not str(error.get("type", "")).endswith("_type") or "input" not in error:
        return ""
    value = error["input"]
    if isinstance(value, (dict, list)):
        return f" (got a JSON {'object' if isinstance(value, dict) else 'array'})"
    names = {str: "string", bool: "boolean", int: "integer", float: "number", type(None): "null"}
    shown = json.dumps(value, ensure_ascii=False)
    return f" (got the {names.get(type(value), type(value).__name__)} {shown[:40]}{'...' if len(shown) > 40 else ''})"


def check_content_type(value: str | None) -> None:
    """A request body must be JSON: a ``Content-Type`` that says otherwise is a 415 (none at all is
    accepted, as curl and some SDKs send none).

    Raises
    ------
    ApiError
        415 naming the type that was sent.
    """
    if value is None or not value.strip():
        return
    media = value.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    raise ApiError(415, f"Content-Type {media!r} is not supported: send the body as JSON with "
                   "'Content-Type: application/json'", param="Content-Type", code="unsupported_media_type")


def check_text(text: str | None, *, param: str) -> str:
    """A text to classify: non-empty (after stripping)."""
    if text is None or not text.strip():
        raise ApiError(400, f"{param}: there is no text to classify (empty, or no text parts)", param=param,
                       code="invalid_request")
    return text
