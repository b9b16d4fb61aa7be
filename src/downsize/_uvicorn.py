"""uvicorn on loopback, for the two servers downsize runs: the gateway and the replay teacher.

:class:`ServerThread` serves any ASGI app under a real uvicorn in a background thread (tests,
benchmarks, the demo); :func:`uvicorn_kwargs` are the settings both servers share, with
TCP_NODELAY on every accepted connection (see :class:`_NoDelayH11`). Nothing else in downsize
imports this module, so ``import downsize`` never loads uvicorn.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["ServerThread", "uvicorn_kwargs"]


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


def uvicorn_kwargs(log_level: str = "warning", *, access_log: bool = False, lifespan: str = "on") -> dict[str, Any]:
    """Settings shared by the gateway and the replay teacher (``uvicorn.Config`` keywords)."""
    return {"log_level": log_level, "access_log": access_log, "lifespan": lifespan, "timeout_graceful_shutdown": 30,
            "timeout_keep_alive": 30, "server_header": False, "http": _NoDelayHttpTools or _NoDelayH11}


class ServerThread:
    """An ASGI app under a real uvicorn on 127.0.0.1 (a free port unless one is given), in a
    background thread of this process.

    Examples
    --------
    >>> with ServerThread(create_app(config)) as srv:  # doctest: +SKIP
    ...     OpenAI(base_url=srv.base_url, api_key=key)
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 lifespan: str = "on", **uvicorn_overrides: Any) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.log_level = log_level
        self.lifespan = lifespan
        self.uvicorn_overrides = uvicorn_overrides
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self, timeout: float = 60.0) -> Any:
        import uvicorn

        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets whose proto says
        # TCP, and without it every answer waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        kwargs = {**uvicorn_kwargs(self.log_level, lifespan=self.lifespan), **self.uvicorn_overrides}
        self._server = uvicorn.Server(uvicorn.Config(self.app, host=self.host, port=self.port, **kwargs))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"downsize-server-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start on {self.host}:{self.port} within {timeout}s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        """Shut down like SIGTERM would: the lifespan (if any) ends before this returns."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self._server = self._thread = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
