"""The server in a thread of this process: for notebooks, tests and benchmarks.

Example::

    from openai import OpenAI
    from langchain_llava_cot import ChatLlavaCoT
    from langchain_llava_cot.server import BackgroundServer, create_app

    with BackgroundServer(create_app(ChatLlavaCoT(strategy="greedy"))) as server:
        client = OpenAI(base_url=server.url, api_key="unused")
"""

from __future__ import annotations

import threading
import time
from typing import Any

__all__ = ["BackgroundServer"]


class BackgroundServer:
    """uvicorn serving ``app`` from a daemon thread, on ``host`` and ``port`` (0: a free port).

    Use it as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"
    ) -> None:
        import uvicorn

        self.app = app
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off")
        )
        self._thread = threading.Thread(target=self._server.run, name="llava-cot serve", daemon=True)
        self.host, self.port = host, port

    @property
    def url(self) -> str:
        """The OpenAI base URL: ``http://HOST:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        """Start serving; returns once the socket listens."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                msg = f"The server did not start on {self.host}:{self.port} (is the port taken?)."
                raise RuntimeError(msg)
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
