"""``GET /healthz`` and ``GET /metrics`` (no API key: for probes and scrapers on the host)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from .._body import dumps
from .._deps import GatewayDep
from .._metrics import CONTENT_TYPE

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Store and teacher reachability")
async def healthz(gw: GatewayDep) -> Response:
    """200 ``ok`` or ``degraded`` (a teacher is down: students still answer; or a task runs without the
    student it should have), with the ``reasons``; 503 if the store is unreachable. Each task has its
    ``status`` (and ``status_reason``), ``mode`` and the ``reason`` for it.

    Teachers are probed with ``GET /models`` (2 s timeout), cached for 5 s.
    """
    status, body = await gw.health()
    return Response(dumps(body), status_code=status, media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(gw: GatewayDep) -> Response:
    return Response(gw.metrics.render(), media_type=CONTENT_TYPE)
