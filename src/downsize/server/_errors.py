"""Errors as the OpenAI API shapes them: ``{"error": {"message", "type", "param", "code"}}``.

Every failure leaves the gateway in that shape, with a 4xx for anything the client can fix
and never a 500 for a malformed request: :func:`install_handlers` maps FastAPI's validation
errors, Starlette's HTTP errors (404 route, 405 method), :class:`ApiError`, every
:class:`~downsize.errors.DownsizeError` and, as a last resort, any other exception (500,
without the details, which go to the log). Messages pass through the gateway's redactor so
that no teacher API key can leave in an error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    AnswerError,
    BudgetExceeded,
    CalibrationError,
    ConfigError,
    DataError,
    DownsizeError,
    StoreError,
    TeacherError,
    TeacherResponseError,
    TeacherStatusError,
    TeacherTimeout,
)

__all__ = ["ApiError", "error_response", "install_handlers", "teacher_error"]

log = logging.getLogger("downsize.server")

#: OpenAI's error ``type`` per status.
_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error", 409: "invalid_request_error",
          413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error", 500: "server_error", 502: "server_error", 503: "server_error",
          504: "server_error"}


class ApiError(Exception):
    """An error answered to the client as-is (status, OpenAI-style body, extra headers)."""

    def __init__(self, status: int, message: str, *, type: str | None = None, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
        self.param = param
        self.code = code
        self.headers = headers or {}
        #: Set once a route wrote the request's audit row (else the handler writes a generic one).
        self.audited = False


def error_response(status: int, message: str, *, type: str | None = None, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": type or _TYPES.get(status, "server_error"),
                      "param": param, "code": code}}
    return Response(json.dumps(body, ensure_ascii=False).encode("utf-8", "replace"), status_code=status,
                    media_type="application/json", headers=headers)


def teacher_error(exc: TeacherError, *, teacher: str) -> ApiError:
    """A teacher failure as the gateway reports it: 503 unreachable, 504 slow, 502 bad answer,
    or the teacher's own 4xx (the client's request was bad)."""
    msg = str(exc)
    if isinstance(exc, TeacherTimeout):
        return ApiError(504, f"the teacher {teacher!r} did not answer in time: {msg}", code="teacher_timeout")
    if isinstance(exc, TeacherStatusError):
        if exc.status in (401, 403, 407):  # the gateway's own credentials: not the client's fault
            return ApiError(502, f"the teacher {teacher!r} refused the gateway's credentials (HTTP {exc.status}); "
                            "check its api_key_env", code="teacher_auth_failed")
        if 400 <= exc.status < 500 and exc.status != 429:
            inner = _inner_message(exc.body) or msg
            return ApiError(exc.status, f"the teacher {teacher!r} rejected the request: {inner}",
                            code="teacher_rejected")
        return ApiError(502 if exc.status != 429 else 503,
                        f"the teacher {teacher!r} failed: HTTP {exc.status}", code="teacher_error")
    if isinstance(exc, TeacherResponseError):
        return ApiError(502, f"the teacher {teacher!r} gave an unusable answer: {msg}", code="teacher_bad_response")
    return ApiError(503, f"the teacher {teacher!r} is unavailable: {msg}", code="teacher_unavailable")


def _inner_message(body: str) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    err = data.get("error") if isinstance(data, dict) else None
    if isinstance(err, dict) and isinstance(err.get("message"), str):
        return err["message"]
    if isinstance(err, str):
        return err
    return None


def _redactor(request: Request) -> Callable[[str], str]:
    gw = getattr(request.app.state, "gateway", None)
    return gw.redact if gw is not None else (lambda s: s)


def _downsize_status(exc: DownsizeError) -> int:
    if isinstance(exc, TeacherError):
        return teacher_error(exc, teacher="?").status
    # an answer that does not fit the task reaches here only from a client's input (a review, a
    # label): the client can fix it. (Teacher answers that do not fit are TeacherResponseError.)
    for cls, status in ((ConfigError, 400), (DataError, 400), (AnswerError, 400), (BudgetExceeded, 402),
                        (CalibrationError, 409), (StoreError, 503)):
        if isinstance(exc, cls):
            return status
    return 500


def _validation_message(errors: list[Any]) -> tuple[str, str | None]:
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body",)]
    param = ".".join(loc) or None
    msg = str(first.get("msg", "invalid value"))
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return (f"{param}: {msg}{more}" if param else f"{msg}{more}"), param


async def _audit_rejected(request: Request, status: int, message: str, code: str | None) -> None:
    """An audit row (and a counted metric) for an API request refused before any route recorded it
    (401, 429, 404 of a route or task...). Requests outside ``/v1`` (probes, the review page) are not."""
    gw = getattr(request.app.state, "gateway", None)
    if gw is None or not request.url.path.startswith("/v1/"):
        return
    try:
        body: bytes | None = await request.body()
    except Exception:  # the client left, or the body was already streamed away
        body = None
    gw.record_rejected(status=status, message=message, code=code, path=request.url.path, body=body,
                       key_id=getattr(request.state, "key_id", None))


def install_handlers(app: FastAPI) -> None:
    """Map every exception to an OpenAI-style error body (see the module docstring)."""

    @app.exception_handler(ApiError)
    async def _api(request: Request, exc: ApiError) -> Response:
        if not exc.audited:
            await _audit_rejected(request, exc.status, exc.message, exc.code)
        return error_response(exc.status, _redactor(request)(exc.message), type=exc.type, param=exc.param,
                              code=exc.code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        msg, param = _validation_message(list(exc.errors()))
        return error_response(400, _redactor(request)(msg), param=param, code="invalid_request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        elif exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path}"
        await _audit_rejected(request, exc.status_code, detail, None)
        return error_response(exc.status_code, _redactor(request)(detail),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(DownsizeError)
    async def _downsize(request: Request, exc: DownsizeError) -> Response:
        status = _downsize_status(exc)
        if status >= 500:
            log.error("request %s %s failed: %s", request.method, request.url.path,
                      _redactor(request)(f"{type(exc).__name__}: {exc}"))
        return error_response(status, _redactor(request)(str(exc)), code=type(exc).__name__)

    @app.exception_handler(Exception)
    async def _last_resort(request: Request, exc: Exception) -> Response:
        log.error("request %s %s: unexpected %s: %s", request.method, request.url.path, type(exc).__name__,
                  _redactor(request)(str(exc)))
        return error_response(500, "internal error in the downsize gateway (logged)", code="internal_error")
