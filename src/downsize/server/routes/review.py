"""``/review``: the review page, and the JSON API it works the queue with.

``GET /review`` (and its script) is a static page with no data in it: it asks for an API key,
keeps it in the tab's ``sessionStorage`` (or takes it from ``#key=`` in the URL, which is never
sent to a server) and calls ``/review/api/...`` with ``Authorization: Bearer <key>``, like every
other route of the gateway; without a key those answer 401 and the page shows nothing. Texts
reach the page as JSON and are written with ``textContent``, and the page's Content-Security-Policy
allows no inline script and no other origin, so HTML in a text is shown, never run.

The API key's id is the reviewer (its name is shown); with ``--insecure-no-auth`` every reviewer
is ``local``. An item served to one reviewer is held back from the others for two minutes (in
this process), so two people working one queue rarely see the same item; when they do, both
answers are kept and the conflict is shown.
"""

from __future__ import annotations

import asyncio
import json
import time
from importlib import resources
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from ...errors import AnswerError, ConfigError
from ...review import NoSuchItem, ReviewQueue, fill_queue
from .._body import dumps, parse_json, validate
from .._deps import Client, ClientDep
from .._errors import ApiError

__all__ = ["ReviewAction", "router"]

router = APIRouter(tags=["review"])

_LEASE_S = 120.0
_FILL_EVERY_S = 10.0
_FILL_ROWS = 20_000  # per audit table and request: a large backlog is read in steps
_SECURITY = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; "
                               "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class ReviewAction(BaseModel):
    """``POST /review/api/{task}/items/{id}``: what the reviewer did with the item."""

    model_config = ConfigDict(extra="forbid")

    how: Literal["teacher", "student", "pick", "edit", "skip"]
    answer: Any = Field(default=None, description="pick/edit: the answer, in any form the task's kind normalises")
    answer_text: str | None = Field(default=None, max_length=1_000_000,
                                    description="edit: the editor's text: JSON, or a bare value")


def _asset(name: str) -> bytes:
    return resources.files("downsize").joinpath("_assets", name).read_bytes()


@router.get("/review", include_in_schema=False)
async def page() -> Response:
    """The page (no data in it: everything comes from the API, with a key)."""
    return Response(_asset("review.html"), media_type="text/html; charset=utf-8", headers=_SECURITY)


@router.get("/review/review.js", include_in_schema=False)
async def script() -> Response:
    return Response(_asset("review.js"), media_type="text/javascript; charset=utf-8", headers=_SECURITY)


class _State:
    """Per app: items leased to reviewers, and when each task's queue was last filled."""

    def __init__(self) -> None:
        self.leases: dict[int, tuple[str, float]] = {}
        self.filled: dict[str, float] = {}
        self.locks: dict[str, asyncio.Lock] = {}

    def held_for_others(self, reviewer: str) -> list[int]:
        now = time.monotonic()
        self.leases = {i: (who, t) for i, (who, t) in self.leases.items() if t > now}
        return [i for i, (who, _) in self.leases.items() if who != reviewer]

    def lease(self, item_id: int, reviewer: str) -> None:
        self.leases[item_id] = (reviewer, time.monotonic() + _LEASE_S)


def _state(request: Request) -> _State:
    st = getattr(request.app.state, "review", None)
    if st is None:
        st = request.app.state.review = _State()
    return st


def _reviewer(client: Client) -> str:
    return client.key_id or "local"


def _queue(client: Client) -> ReviewQueue:
    return ReviewQueue(client.gateway.store, client.gateway.config)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json", headers=_SECURITY)


async def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a store call off the event loop, mapping the queue's errors to HTTP answers."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except ConfigError as exc:  # a task that is not (or no longer) in the config
        raise ApiError(404, str(exc), param="task", code="task_not_found") from None
    except NoSuchItem as exc:
        raise ApiError(404, str(exc), param="item", code="item_not_found") from None
    except AnswerError as exc:
        raise ApiError(400, f"answer: {exc}", param="answer", code="invalid_answer") from None


async def _fill(request: Request, client: Client, task: str, *, force: bool = False) -> None:
    await _call(_queue(client).task, task)  # a deleted task: 404 saying its items are kept
    st = _state(request)
    lock = st.locks.setdefault(task, asyncio.Lock())
    async with lock:
        if not force and time.monotonic() - st.filled.get(task, float("-inf")) < _FILL_EVERY_S:
            return
        got = await _call(fill_queue, client.gateway.store, client.gateway.config, task, max_rows=_FILL_ROWS)
        if got.more:  # a large backlog: read on at the next request
            return
        st.filled[task] = time.monotonic()


async def _next(request: Request, client: Client, task: str, *, show: int | None = None) -> dict[str, Any]:
    """The item to show (``show``, or the next one), with the queue's figures and recent reviews."""
    q, who, st = _queue(client), _reviewer(client), _state(request)
    if show is not None:
        item = await _call(q.item, show, task=task)
    else:
        item = await _call(q.next_item, task, who, exclude=st.held_for_others(who))
    if item is not None:
        st.lease(item["id"], who)
    stats = await _call(q.stats, task, who)
    recent = await _call(q.recent, task)
    return {"item": item, "stats": stats, "recent": recent}


@router.get("/review/api/tasks", summary="Tasks with a review queue")
async def tasks(request: Request, client: ClientDep) -> Response:
    q = _queue(client)
    names = await _call(q.reviewer_names)
    who = _reviewer(client)
    return _json({"tasks": await _call(q.tasks), "reviewer": who, "reviewer_name": names.get(who, who),
                  "auth": client.gateway.auth})


@router.get("/review/api/{task}/next", summary="The next item to review")
async def next_item(task: str, request: Request, client: ClientDep) -> Response:
    await _fill(request, client, task)
    return _json(await _next(request, client, task))


@router.get("/review/api/{task}/items/{item_id}", summary="One review item")
async def get_item(task: str, item_id: int, request: Request, client: ClientDep) -> Response:
    return _json(await _next(request, client, task, show=item_id))


@router.post("/review/api/{task}/items/{item_id}", summary="Answer or skip an item")
async def act(task: str, item_id: int, request: Request, client: ClientDep) -> Response:
    """Record the reviewer's answer (a new ``human`` label) or skip; returns the next item."""
    action = validate(ReviewAction, parse_json(await request.body()))
    q, who = _queue(client), _reviewer(client)
    if action.how == "skip":
        result = await _call(q.skip, item_id, who, task=task)
    else:
        value = action.answer
        if action.how == "edit" and action.answer_text is not None:
            try:
                value = json.loads(action.answer_text)
            except ValueError:
                value = action.answer_text.strip()  # a bare value, e.g. a label typed without quotes
        result = await _call(q.answer, item_id, who, how=action.how, value=value, task=task)
    _state(request).leases.pop(item_id, None)
    return _json({"result": result, **await _next(request, client, task)})


@router.post("/review/api/{task}/undo", summary="Undo your last action")
async def undo(task: str, request: Request, client: ClientDep) -> Response:
    """Undo this reviewer's last action in the task (its label is revoked) and show that item again."""
    undone = await _call(_queue(client).undo, task, _reviewer(client))
    return _json({"undone": undone, **await _next(request, client, task, show=undone)})


@router.post("/review/api/{task}/fill", summary="Read new audit rows into the queue now")
async def fill(task: str, request: Request, client: ClientDep) -> Response:
    await _fill(request, client, task, force=True)
    return _json(await _next(request, client, task))
