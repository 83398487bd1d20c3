"""Slow uploads against a real uvicorn on 127.0.0.1: they never hold engine capacity.

Several sockets send a few bytes of a body and stall. A normal request from another client is
still answered 200 at once (bodies are read before admission), and each stalled client gets a
408 ``body-timeout`` problem after ``CXR_BODY_TIMEOUT_S`` (short here).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from service.app import create_app

from .uvicorn_thread import HOST, serve

BODY_TIMEOUT_S = 1.5
SLOW_CLIENTS = 6  # more than the capacity below (queue 1 + 1 x 1 running)


@pytest.fixture
def server_port(make_settings, fake_engine) -> Iterator[int]:
    """Port of a ready uvicorn with capacity 2 and a short body timeout; stopped afterwards."""
    settings = make_settings(
        log_level="WARNING", queue_size=1, max_batch=1, body_timeout_s=BODY_TIMEOUT_S
    )
    app = create_app(settings, lambda s: fake_engine())
    with serve(app, "uvicorn-slow-test") as port:
        yield port


def post(
    port: int, path: str, body: bytes, length: int | None = None, method: str = "POST"
) -> socket.socket:
    """Send headers (Content-Length ``length`` or the body's) and ``body``; the open socket."""
    sock = socket.create_connection((HOST, port), timeout=10)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        f"Content-Type: image/png\r\nContent-Length: {len(body) if length is None else length}"
        "\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """The whole response (the server closes the connection), then close the socket."""
    with sock:
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_and_body(response: bytes) -> tuple[int, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("path", ["/v1/report", "/v1/ground?phrase=cardiomegaly"])
def test_stalled_uploads_do_not_lock_out_the_model_routes(server_port, images, path):
    slow = [
        post(server_port, path, b"\x89PNG\r\n\x1a\n", length=10_000) for _ in range(SLOW_CLIENTS)
    ]
    t_stall = time.monotonic()
    try:
        time.sleep(0.3)  # let the app start reading every stalled body
        t0 = time.monotonic()
        status, body = status_and_body(read_all(post(server_port, path, images["png8"])))
        assert status == 200, body[:300]
        assert time.monotonic() - t0 < BODY_TIMEOUT_S  # answered before any stall times out
        for sock in slow:
            status, body = status_and_body(read_all(sock))
            assert status == 408, body[:300]
            problem = json.loads(body)
            assert problem["type"].endswith("/body-timeout") and problem["status"] == 408
        waited = time.monotonic() - t_stall
        assert BODY_TIMEOUT_S - 0.2 <= waited < BODY_TIMEOUT_S + 5
    finally:
        for sock in slow:
            sock.close()
