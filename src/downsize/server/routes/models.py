"""``GET /v1/models``: the ``downsize/<task>`` models and the pass-through teacher's models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from .._body import dumps
from .._deps import ClientDep
from .._errors import ApiError
from .._gateway import Gateway
from .._schemas import ErrorBody, ModelCard, ModelList

__all__ = ["router"]

router = APIRouter(prefix="/v1/models", tags=["models"])


def _cards(gw: Gateway) -> list[dict[str, Any]]:
    created = int(gw.started)
    cards = [{"id": f"downsize/{name}", "object": "model", "created": created, "owned_by": "downsize",
              "downsize": {"mode": rt.mode, "threshold": rt.threshold, "student_version_id": rt.student_version_id}}
             for name, rt in gw.tasks.items()]
    owner = f"teacher:{gw.default_teacher.name}" if gw.default_teacher else "teacher"
    cards += [{"id": m, "object": "model", "created": created, "owned_by": owner} for m in gw.teacher_models()]
    return cards


@router.get("", response_model=ModelList, summary="List models")
async def list_models(client: ClientDep) -> Response:
    gw = client.gateway
    if gw.default_teacher is not None:
        await gw.probe_teacher(gw.default_teacher.name)  # cached; fills in the teacher's own list
    return Response(dumps({"object": "list", "data": _cards(gw)}), media_type="application/json")


@router.get("/{model:path}", response_model=ModelCard, responses={404: {"model": ErrorBody}},
            summary="Retrieve a model")
async def get_model(model: str, client: ClientDep) -> Response:
    gw = client.gateway
    for card in _cards(gw):
        if card["id"] == model:
            return Response(dumps(card), media_type="application/json")
    raise ApiError(404, f"The model {model!r} does not exist", param="model", code="model_not_found")
