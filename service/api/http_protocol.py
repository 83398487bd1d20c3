"""uvicorn's h11 protocol, answering unparseable requests with a problem+json 400.

A request h11 cannot parse (``Content-Length: abc``, two different Content-Length headers,
bad header bytes, a broken request line...) never reaches the app: uvicorn answers it itself
with a ``text/plain`` 400. :class:`ProblemH11Protocol` overrides only that answer
(``send_400_response``, the hook uvicorn calls for every parse error), so it has the same RFC
9457 body, request id and headers as every other error of the service. The entry point selects
it (``uvicorn_options``: ``http=HTTP_PROTOCOL``); it also pins h11, so the parser does not change
when httptools happens to be installed.
"""

from __future__ import annotations

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .access_log import REQUEST_ID_HEADER, accept_request_id
from .errors import BAD_REQUEST, problem_response

HTTP_PROTOCOL = f"{__name__}:ProblemH11Protocol"  # uvicorn's ``http`` option (import string)
DETAIL = "malformed HTTP request (request line, headers or framing): not parsed"
UNKNOWN_PATH = "/"  # ``instance``: the target of an unparsed request is not known


class ProblemH11Protocol(H11Protocol):
    """:class:`H11Protocol` whose parse-error 400 is ``application/problem+json``."""

    def send_400_response(self, msg: str) -> None:
        """Send the 400 problem and close the connection (``msg``: uvicorn's text, unused)."""
        rid = accept_request_id(None)
        resp = problem_response(BAD_REQUEST, DETAIL, instance=UNKNOWN_PATH, request_id=rid)
        headers = [
            *resp.raw_headers,
            (b"connection", b"close"),
            (REQUEST_ID_HEADER.lower().encode(), rid.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"cache-control", b"no-store"),
        ]
        events = (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=bytes(resp.body)),
            h11.EndOfMessage(),
        )
        for event in events:
            out = self.conn.send(event)
            if out:
                self.transport.write(out)
        self.transport.close()
