"""Running the gateway: ``serve`` (the CLI's ``downsize serve``); :class:`ServerThread` (a real
uvicorn on loopback in a background thread, for tests and benchmarks) is :mod:`downsize._uvicorn`'s."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from .._uvicorn import ServerThread, uvicorn_kwargs
from ..config import load_config

__all__ = ["serve", "ServerThread"]

log = logging.getLogger("downsize.server")

#: Internal: how ``serve --workers N`` tells its worker processes what to build.
_SPEC_ENV = "DOWNSIZE_SERVE_SPEC"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _log_config(log_level: str) -> dict[str, Any]:
    """uvicorn's logging config plus downsize's loggers (applied in every worker process)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg["loggers"]["downsize"] = {"handlers": ["default"], "level": log_level.upper(), "propagate": False}
    return cfg


def serve(config_path: str | os.PathLike[str] = "downsize.yaml", *, host: str = "127.0.0.1", port: int = 8000,
          workers: int = 1, auth: bool = True, log_level: str = "info", access_log: bool = False) -> None:
    """Serve the gateway until interrupted (SIGINT/SIGTERM shut it down cleanly, flushing the log).

    With ``workers > 1`` each worker process builds its own app (students, teachers, audit
    writer); ``server.rate_limit_per_minute`` is split evenly between them.
    """
    import uvicorn

    config = load_config(config_path)  # fail here, before any worker starts
    if not auth:
        log.warning("API keys are OFF (--insecure-no-auth): anyone who can reach %s:%d can use the teachers",
                    host, port)
        if host not in _LOOPBACK:
            log.warning("--insecure-no-auth on %s, which is not loopback: this exposes paid teachers", host)
    kwargs = {**uvicorn_kwargs(log_level, access_log=access_log), "log_config": _log_config(log_level)}
    if workers <= 1:
        from ._app import create_app

        uvicorn.run(create_app(config, auth=auth), host=host, port=port, **kwargs)
        return
    per_worker = max(1, math.ceil(config.server.rate_limit_per_minute / workers))
    os.environ[_SPEC_ENV] = json.dumps({"config": str(Path(config_path).resolve()), "auth": auth, "rate": per_worker})
    # uvicorn kills a worker that does not answer its supervisor's ping within
    # timeout_worker_healthcheck (5 s by default); a worker loading its students on a busy
    # machine can take longer than that to answer, and was seen killed and restarted in a loop.
    uvicorn.run("downsize.server._run:_app_from_env", factory=True, workers=workers, host=host, port=port,
                timeout_worker_healthcheck=60, **kwargs)


def _app_from_env() -> Any:
    """The app of one ``serve --workers N`` worker (uvicorn's factory)."""
    from ._app import create_app

    spec = json.loads(os.environ[_SPEC_ENV])
    return create_app(load_config(spec["config"]), auth=bool(spec["auth"]), rate_limit_per_minute=int(spec["rate"]))
