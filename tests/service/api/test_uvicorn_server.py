"""Against a real uvicorn on 127.0.0.1 (in a thread, options of ``python -m service``).

Raw sockets: a client that sends part of its body and hangs up is counted as 499 (never a
500), HEAD works on the health routes, and no ``server`` header is sent.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from service.app import create_app

from .uvicorn_thread import HOST, serve


@pytest.fixture
def server_port(make_settings, fake_engine) -> Iterator[int]:
    """Port of a ready uvicorn serving the app on the fake engine; stopped afterwards."""
    app = create_app(make_settings(log_level="WARNING"), lambda s: fake_engine())
    with serve(app, "uvicorn-test") as port:
        yield port


def exchange(port: int, head: bytes, body: bytes = b"") -> bytes:
    """Send one request (``head`` without Host / Connection) and read the whole response."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(head + b"Host: test\r\nConnection: close\r\n\r\n" + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def header_names(response: bytes) -> set[str]:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {line.split(":", 1)[0].strip().lower() for line in head}


def hang_up(port: int) -> None:
    """POST headers announcing 10000 bytes, send 100, close the connection."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/report HTTP/1.1\r\nHost: test\r\nContent-Type: application/dicom\r\n"
            b"Content-Length: 10000\r\n\r\n" + b"\0" * 100
        )
        time.sleep(0.2)  # let the app start reading the body


def requests_with_status(port: int, status: int) -> float:
    text = exchange(port, b"GET /metrics HTTP/1.1\r\n").split(b"\r\n\r\n", 1)[1].decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("cxr_http_requests_total{") and f'status="{status}"' in line
    )


def test_hang_up_mid_body_is_counted_as_499(server_port):
    hang_up(server_port)
    deadline = time.monotonic() + 10
    while requests_with_status(server_port, 499) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert requests_with_status(server_port, 499) == 1
    assert requests_with_status(server_port, 500) == 0
    assert b" 200 " in exchange(server_port, b"GET /healthz HTTP/1.1\r\n")  # still serving


def test_no_server_header_and_head_on_health(server_port):
    for path in (b"/healthz", b"/readyz"):
        get = exchange(server_port, b"GET " + path + b" HTTP/1.1\r\n")
        head = exchange(server_port, b"HEAD " + path + b" HTTP/1.1\r\n")
        assert get.startswith(b"HTTP/1.1 200") and head.startswith(b"HTTP/1.1 200"), head
        assert head.endswith(b"\r\n\r\n")  # no body
        for response in (get, head):
            names = header_names(response)
            assert "server" not in names, response
            assert {"x-content-type-options", "cache-control", "x-request-id"} <= names
