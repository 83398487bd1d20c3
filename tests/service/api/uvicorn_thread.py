"""A real uvicorn on 127.0.0.1 in a thread, for the socket-level tests (port 0, stopped after)."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from service.__main__ import uvicorn_options

HOST = "127.0.0.1"


def _ready(port: int) -> bool:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


@contextmanager
def serve(app: Any, name: str = "uvicorn-test") -> Iterator[int]:
    """Serve ``app`` with the entry point's uvicorn options; yields the port once ready."""
    options = {**uvicorn_options(HOST, 0), "log_config": None, "log_level": "warning"}
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        port = int(server.servers[0].sockets[0].getsockname()[1])
        while not _ready(port):
            assert time.monotonic() < deadline, "app did not become ready"
            time.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        thread.join(15)
