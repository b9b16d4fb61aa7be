"""Running the gateway: ``serve`` (the CLI's ``downsize serve``) and :class:`ServerThread`
(a real uvicorn on loopback in a background thread, for tests and benchmarks)."""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from ..config import load_config

__all__ = ["serve", "ServerThread"]

log = logging.getLogger("downsize.server")

#: Internal: how ``serve --workers N`` tells its worker processes what to build.
_SPEC_ENV = "DOWNSIZE_SERVE_SPEC"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _nodelay(transport: Any) -> None:
    sock = transport.get_extra_info("socket")
    try:
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket after all
        pass


class _NoDelayH11(H11Protocol):
    """uvicorn's h11 protocol with TCP_NODELAY on each connection.

    In ``--workers N`` mode the workers' accepted connections were seen without TCP_NODELAY on
    Python's own event loop: every response then waited ~40 ms for the client's delayed ACK
    (Nagle), capping one connection at ~22 requests/s. Setting it per connection removes that.
    """

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        _nodelay(transport)
        super().connection_made(transport)


try:  # httptools is optional (uvicorn[standard])
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - depends on the environment
    _NoDelayHttpTools: Any = None
else:

    class _NoDelayHttpTools(HttpToolsProtocol):  # type: ignore[no-redef]
        """uvicorn's httptools protocol with TCP_NODELAY on each connection (see :class:`_NoDelayH11`)."""

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            _nodelay(transport)
            super().connection_made(transport)


def _uvicorn_kwargs(log_level: str, access_log: bool) -> dict[str, Any]:
    return {"log_level": log_level, "access_log": access_log, "lifespan": "on", "timeout_graceful_shutdown": 30,
            "timeout_keep_alive": 30, "server_header": False, "http": _NoDelayHttpTools or _NoDelayH11}


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
    kwargs = {**_uvicorn_kwargs(log_level, access_log), "log_config": _log_config(log_level)}
    if workers <= 1:
        from ._app import create_app

        uvicorn.run(create_app(config, auth=auth), host=host, port=port, **kwargs)
        return
    per_worker = max(1, math.ceil(config.server.rate_limit_per_minute / workers))
    os.environ[_SPEC_ENV] = json.dumps({"config": str(Path(config_path).resolve()), "auth": auth, "rate": per_worker})
    uvicorn.run("downsize.server._run:_app_from_env", factory=True, workers=workers, host=host, port=port, **kwargs)


def _app_from_env() -> Any:
    """The app of one ``serve --workers N`` worker (uvicorn's factory)."""
    from ._app import create_app

    spec = json.loads(os.environ[_SPEC_ENV])
    return create_app(load_config(spec["config"]), auth=bool(spec["auth"]), rate_limit_per_minute=int(spec["rate"]))


class ServerThread:
    """An ASGI app under a real uvicorn on 127.0.0.1, in a background thread.

    Examples
    --------
    >>> with ServerThread(create_app(config)) as srv:  # doctest: +SKIP
    ...     OpenAI(base_url=srv.base_url, api_key=key)
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 **uvicorn_kwargs: Any) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.log_level = log_level
        self.uvicorn_kwargs = uvicorn_kwargs
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self, timeout: float = 60.0) -> ServerThread:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        cfg = uvicorn.Config(self.app, host=self.host, port=self.port,
                             **{**_uvicorn_kwargs(self.log_level, False), **self.uvicorn_kwargs})
        self._server = uvicorn.Server(cfg)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="downsize-gateway", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the gateway did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Shut down like SIGTERM would: the lifespan ends, and the audit log is flushed."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self._server = self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
