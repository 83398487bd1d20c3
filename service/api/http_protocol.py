"""uvicorn's h11 protocol, answering unparseable requests with a problem+json 400.

A request h11 cannot parse (``Content-Length: abc``, two different Content-Length headers,
bad header bytes, a broken request line...) never reaches the app: uvicorn answers it itself
with a ``text/plain`` 400. :class:`ProblemH11Protocol` overrides only that answer
(``send_400_response``, the hook uvicorn calls for every parse error), so it has the same RFC
9457 body, request id and headers as every other error of the service. The entry point selects
it (``uvicorn_options``: ``http=HTTP_PROTOCOL``); it also pins h11, so the parser does not change
when httptools happens to be installed.

It also bounds the time a new connection may take to send its request line and headers
(``header_timeout_s``, ``CXR_HEADER_TIMEOUT_S``, set by the entry point): uvicorn times out
neither, and the body timeout of the routes only starts once the headers are in, so a client
trickling one header line a second could hold a connection for ever. Late headers get a 408
problem and the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .access_log import REQUEST_ID_HEADER, accept_request_id
from .errors import BAD_REQUEST, BODY_TIMEOUT, Problem, problem_response

HTTP_PROTOCOL = f"{__name__}:ProblemH11Protocol"  # uvicorn's ``http`` option (import string)
DETAIL = "malformed HTTP request (request line, headers or framing): not parsed"
UNKNOWN_PATH = "/"  # ``instance``: the target of an unparsed request is not known


def _problem(problem: Problem, detail: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of a problem answered by the protocol itself (connection closed)."""
    rid = accept_request_id(None)
    resp = problem_response(problem, detail, instance=UNKNOWN_PATH, request_id=rid)
    headers = [
        *resp.raw_headers,
        (b"connection", b"close"),
        (REQUEST_ID_HEADER.lower().encode(), rid.encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-store"),
    ]
    return headers, bytes(resp.body)


class ProblemH11Protocol(H11Protocol):
    """:class:`H11Protocol` whose parse-error 400 is ``application/problem+json`` and whose
    new connections must send their headers within ``header_timeout_s``."""

    header_timeout_s: ClassVar[float] = 30.0  # the entry point sets CXR_HEADER_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.cycle is not None:  # the first request's headers are in
            self._stop_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        """408 problem written straight to the socket (h11 cannot answer a request it has not
        parsed), then close."""
        self._header_timer = None
        if self.cycle is not None or self.transport.is_closing():
            return
        detail = f"the request headers did not arrive within {self.header_timeout_s:g} s"
        headers, body = _problem(BODY_TIMEOUT, detail)
        lines = b"".join(k + b": " + v + b"\r\n" for k, v in headers)
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\n" + lines + b"\r\n" + body)
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """Send the 400 problem and close the connection (``msg``: uvicorn's text, unused)."""
        headers, body = _problem(BAD_REQUEST, DETAIL)
        events = (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        )
        for event in events:
            out = self.conn.send(event)
            if out:
                self.transport.write(out)
        self.transport.close()
