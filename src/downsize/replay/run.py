"""Running the replay teacher: in a thread of this process (:class:`ReplayServer`), in a child
process (:class:`ReplayProcess`, for benchmarks and kill-and-resume tests), or in the foreground
(:func:`serve_replay`, the CLI's ``downsize teacher replay``)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._uvicorn import ServerThread, uvicorn_kwargs
from .app import create_replay_app, load_records

__all__ = ["ReplayProcess", "ReplayServer", "serve_replay"]


class ReplayServer(ServerThread):
    """The replay teacher on 127.0.0.1 (a free port unless one is given), in a background thread.

    Examples
    --------
    >>> with ReplayServer({"hello": "greeting", "bye": "farewell"}) as srv:  # doctest: +SKIP
    ...     srv.base_url  # 'http://127.0.0.1:PORT/v1'
    """

    def __init__(self, records: Mapping[str, str], *, port: int = 0, host: str = "127.0.0.1", **opts: Any) -> None:
        super().__init__(create_replay_app(records, **opts), host=host, port=port, lifespan="off")

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, text_col: str = "text", label_col: str = "label", **opts: Any
    ) -> ReplayServer:
        """A replay server answering with the ``label_col`` of each ``text_col`` in a data file."""
        return cls(load_records(path, text_col=text_col, label_col=label_col), **opts)

    @property
    def stats(self) -> dict[str, Any]:
        """Requests answered, by status; abandoned; in flight (as ``GET /stats``)."""
        return self.app.state.snapshot()


def serve_replay(
    path: str | os.PathLike[str],
    *,
    text_col: str = "text",
    label_col: str = "label",
    host: str = "127.0.0.1",
    port: int = 8001,
    log_level: str = "info",
    pool: str | os.PathLike[str] | None = None,
    **opts: Any,
) -> None:
    """Serve the replay teacher from a labelled file until interrupted (``downsize teacher replay``);
    ``pool``: a file of recorded examples (same columns) that generation requests are answered from."""
    import uvicorn

    if pool is not None:
        opts["pool"] = load_records(pool, text_col=text_col, label_col=label_col)
    app = create_replay_app(load_records(path, text_col=text_col, label_col=label_col), **opts)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, **uvicorn_kwargs(log_level, lifespan="off"))).run()


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ReplayProcess:
    """The replay teacher in a child process (benchmarks, kill-and-resume tests).

    Same surface as :class:`ReplayServer`: ``base_url`` and ``stats`` (read over HTTP).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        text_col: str = "text",
        label_col: str = "label",
        port: int | None = None,
        **opts: Any,
    ) -> None:
        self.path = Path(path)
        self.host = "127.0.0.1"
        self.port = port
        self._kwargs = {"text_col": text_col, "label_col": label_col, **opts}
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def stats(self) -> dict[str, Any]:
        """The child's ``GET /stats``."""
        return self._http().get(f"http://{self.host}:{self.port}/stats").json()

    def _http(self) -> Any:
        import httpx

        if self._client is None:
            self._client = httpx.Client(timeout=10, trust_env=False)
        return self._client

    def start(self, timeout: float = 30.0) -> ReplayProcess:
        import httpx

        self.port = self.port or _free_port(self.host)
        args = json.dumps(
            {"path": str(self.path), "host": self.host, "port": self.port, "log_level": "warning", **self._kwargs}
        )
        code = "import json, sys; from downsize.replay import serve_replay; a = json.loads(sys.argv[1]); serve_replay(a.pop('path'), **a)"
        self.proc = subprocess.Popen([sys.executable, "-c", code, args])
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the replay teacher exited with code {self.proc.returncode}")
            try:
                self._http().get(f"http://{self.host}:{self.port}/v1/models", timeout=1)
                return self
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the replay teacher did not start on port {self.port} within {timeout}s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> ReplayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
