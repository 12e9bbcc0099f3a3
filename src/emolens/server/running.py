"""Running the app with uvicorn: its settings, ``emolens serve`` and a background server for
tests and benchmarks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI

from emolens.server.app import create_app
from emolens.server.config import MB, ServerConfig
from emolens.server.security import redact_tokens_in_logs, timed_h11_protocol


def uvicorn_config(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> Any:
    """uvicorn settings of the app (its :class:`ServerConfig` in ``app.state.config``):

    - ``timeout_keep_alive`` = ``keep_alive_s`` (5 s): an idle keep-alive connection is closed;
    - the h11 protocol with two timers (:func:`~emolens.server.security.timed_h11_protocol`): the
      headers of a request must arrive within ``header_timeout_s`` (10 s, counted from the first
      byte, or from the connection when it sends nothing), and a body may pause at most
      ``body_timeout_s`` (10 s); a half-sent request gets 408 and its connection is closed;
    - ``h11_max_incomplete_event_size`` 16 KiB (request line + headers), ``ws_max_size`` 16 MB,
      WebSocket pings every 20 s (closed when unanswered for 20 s).
    """
    import uvicorn

    config: ServerConfig = getattr(app.state, "config", None) or ServerConfig()
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, ws_max_size=16 * MB, lifespan="on",
                          http=timed_h11_protocol(config.header_timeout_s, config.body_timeout_s),
                          timeout_keep_alive=config.keep_alive_s, h11_max_incomplete_event_size=16 * 1024,
                          ws_ping_interval=20.0, ws_ping_timeout=20.0)


def serve(config: ServerConfig | None = None, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info") -> None:
    """Run the app with uvicorn until Ctrl-C (the settings of :func:`uvicorn_config`)."""
    import uvicorn

    config = config or ServerConfig()
    config.host = host
    redact_tokens_in_logs()
    uvicorn.Server(uvicorn_config(create_app(config), host=host, port=port, log_level=log_level)).run()


@contextmanager
def running_server(app: FastAPI, host: str = "127.0.0.1", port: int = 0, timeout: float = 60.0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread (port 0: a free one); yields its base URL
    and stops the server on exit. For tests and benchmarks."""
    import uvicorn

    server = uvicorn.Server(uvicorn_config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="emolens-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the emolens server did not start")
        time.sleep(0.05)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
