"""Dependencies of the routes, as ``Annotated`` aliases: the gateway, and the authenticated,
rate-limited client (which carries the gateway, so a route needs one dependency, not two)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from ._errors import ApiError
from ._gateway import Gateway
from ._limits import retry_after_header

__all__ = ["GatewayDep", "ClientDep", "Client", "get_gateway", "authenticate"]


async def get_gateway(request: Request) -> Gateway:
    gw = getattr(request.app.state, "gateway", None)
    if gw is None:  # only if the lifespan did not run
        raise ApiError(503, "the gateway is not started", code="not_ready")
    return gw  # type: ignore[no-any-return]


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


@dataclass(frozen=True)
class Client:
    """Who is calling (the API key's id, None without auth; the rate-limit bucket) and the gateway."""

    key_id: str | None
    bucket: str
    gateway: Gateway


async def authenticate(request: Request) -> Client:
    """``Authorization: Bearer <key>`` (unless auth is off), then the per-key token bucket.

    Raises
    ------
    ApiError
        401 without a valid, unrevoked key; 429 with ``Retry-After`` over the rate limit.
    """
    gw = await get_gateway(request)
    if gw.auth:
        header = request.headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise ApiError(401, "no API key: send 'Authorization: Bearer <key>' (create one with "
                           "`downsize keys create NAME`)", code="invalid_api_key")
        gw.refresh_keys_soon()
        key_id = gw.keyring.lookup(secret) or await gw.fetch_key(secret)
        if key_id is None:
            raise ApiError(401, "invalid or revoked API key", code="invalid_api_key")
        client = Client(key_id, key_id, gw)
    else:
        client = Client(None, request.client.host if request.client else "anonymous", gw)
    request.state.key_id = client.key_id  # for the audit row of a refused request
    wait = gw.limiter.take(client.bucket)
    if wait:
        raise ApiError(429, f"rate limit of {gw.limiter.per_minute} requests per minute exceeded for "
                       f"{client.key_id or 'this client'}; retry in {wait:.1f}s", code="rate_limit_exceeded",
                       headers={"Retry-After": retry_after_header(wait)})
    return client


ClientDep = Annotated[Client, Depends(authenticate)]
