"""``create_app``: the FastAPI application of the gateway."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from .._version import __version__
from ..config import Config
from ..store import Store
from ._errors import install_handlers
from ._gateway import Gateway
from ._limits import BodyLimitMiddleware
from .routes import chat, models, ops, review, tasks

__all__ = ["create_app"]


def create_app(config: Config, *, store: Store | None = None, auth: bool = True,
               rate_limit_per_minute: int | None = None) -> FastAPI:
    """The gateway as a FastAPI app. Nothing is opened until the app starts (its lifespan).

    Parameters
    ----------
    config : Config
        Tasks, teachers and ``server`` settings.
    store : Store, optional
        The store to read students from and write the audit log to (default: the config's;
        a store passed in is not closed when the app stops).
    auth : bool
        Require ``Authorization: Bearer <key>`` on ``/v1`` (``downsize keys create``).
        ``False`` only with ``downsize serve --insecure-no-auth``.
    rate_limit_per_minute : int, optional
        Overrides ``server.rate_limit_per_minute`` (``serve --workers N`` splits it per worker).

    Returns
    -------
    FastAPI
        While running, ``app.state.gateway`` is the :class:`~downsize.server._gateway.Gateway`.

    Examples
    --------
    >>> import uvicorn                                                   # doctest: +SKIP
    >>> uvicorn.run(create_app(load_config("downsize.yaml")), host="127.0.0.1", port=8000)
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gw = await Gateway.open(config, store=store, auth=auth, rate_limit_per_minute=rate_limit_per_minute)
        app.state.gateway = gw
        gc.collect()
        gc.freeze()  # the students and everything loaded so far: never scanned again by the collector
        try:
            yield
        finally:
            app.state.gateway = None
            await gw.aclose()

    app = FastAPI(
        title="downsize gateway",
        version=__version__,
        summary="OpenAI-compatible endpoint: small local students answer when they provably may.",
        lifespan=lifespan,
    )
    app.state.gateway = None
    install_handlers(app)
    def rejected(scope: dict[str, Any], status: int, message: str, code: str) -> None:
        gw = app.state.gateway
        if gw is not None and str(scope.get("path", "")).startswith("/v1/"):
            gw.record_rejected(status=status, message=message, code=code, path=scope["path"], body=None)

    app.add_middleware(BodyLimitMiddleware, max_bytes=config.server.max_body_bytes, on_reject=rejected)
    for r in (chat.router, tasks.router, models.router, ops.router, review.router):
        app.include_router(r)
    return app
