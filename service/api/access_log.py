"""Request ids, structured JSON logs (one line per request), HTTP metrics and the body limit.

:class:`RequestMiddleware` is a pure ASGI middleware. Per request it accepts ``X-Request-ID``
when it is safe (1-128 of ``[A-Za-z0-9._:-]``) or makes one, echoes it in the response header,
refuses bodies over the limit (413, before reading when Content-Length says so, else while the
route reads), turns unexpected exceptions into a 500 problem, records a client that hangs up
mid-body as status 499 (not a server error, no traceback), adds ``X-Content-Type-Options:
nosniff`` and ``Cache-Control: no-store`` to every response (unless the route set its own), and
logs one JSON line with method, route template, status, duration and batch size. It never logs
bodies, query strings, headers or DICOM attributes. :func:`configure_logging` also routes
Python warnings and the third-party loggers through the JSON form, values stripped
(:mod:`service.api.log_scrub`).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterable
from typing import Any, TextIO

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import (
    INTERNAL,
    TOO_LARGE,
    ApiError,
    count_rejection,
    internal_error_response,
    problem_response,
)
from .log_scrub import route_third_party
from .state import AppState

LOGGER_NAME = "cxr"
ACCESS_LOGGER = "cxr.access"
REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}
#: status recorded (metrics, log) for a client that hung up before its body was read (nginx's)
CLIENT_CLOSED = 499
CLIENT_DISCONNECTED = "client-disconnected"  # the log line's ``problem``
#: on every response: results hold PHI-derived content, never to be sniffed or cached
_DEFAULT_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg and the record's ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _STD_ATTRS})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to the *current* ``sys.stderr`` (which test runners and servers may swap)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _json_handler() -> logging.Handler:
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    return handler


def configure_logging(level: str) -> logging.Logger:
    """Give the ``cxr`` logger one JSON stderr handler (idempotent) and set its level; send
    warnings and the third-party loggers to JSON handlers too, their messages value-free."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_json_handler())
    logger.setLevel(level)
    logger.propagate = False
    route_third_party(_json_handler, logger.level)
    return logger


def accept_request_id(value: str | None) -> str:
    """The client's id when it is safe, else a fresh 32-hex-digit one."""
    if value is not None and _SAFE_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


class BodyTooLarge(ApiError):
    """The request body grew past the configured limit while being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(TOO_LARGE, f"request body exceeds {limit} bytes")


class RequestMiddleware:
    """Request id, body limit, 500 safety net, HTTP metrics and the access log line."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state
        self.log = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        rid = accept_request_id(headers.get(REQUEST_ID_HEADER))
        req_state = scope.setdefault("state", {})
        req_state["request_id"] = rid
        status: int | None = None  # set when the response starts
        t0 = time.perf_counter()
        metrics = self.state.metrics
        metrics.in_flight.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = _with_default_headers(message.get("headers", []), rid)
            await send(message)

        try:
            await self._guarded(scope, receive, send_with_id, headers, rid)
        except ClientDisconnect:  # hung up mid-body: nobody to answer, not a server error
            status = CLIENT_CLOSED
            req_state["problem"] = CLIENT_DISCONNECTED  # on the access log line below
        except Exception:
            self.log.exception("unhandled error", extra={"request_id": rid})
            if status is not None:
                raise
            req_state["problem"] = INTERNAL.slug
            await internal_error_response(_path(scope), rid)(scope, receive, send_with_id)
        finally:
            metrics.in_flight.dec()
            self._record(scope, status or 500, time.perf_counter() - t0, rid)

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, headers: Headers, rid: str
    ) -> None:
        """Refuse a declared-too-large body at once; count bytes of the others as read."""
        limit = self.state.settings.max_body_bytes
        declared = _content_length(headers)
        if declared is not None and declared > limit:
            count_rejection(self.state, TOO_LARGE)
            scope["state"]["problem"] = TOO_LARGE.slug
            err = BodyTooLarge(limit)
            resp = problem_response(TOO_LARGE, err.detail, instance=_path(scope), request_id=rid)
            await resp(scope, receive, send)
            return
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, receive_limited, send)

    def _record(self, scope: Scope, status: int, seconds: float, rid: str) -> None:
        route = scope.get("route")
        endpoint = str(getattr(route, "path", "unmatched")) if route is not None else "unmatched"
        method = scope.get("method", "OTHER")
        method = method if method in _METHODS else "OTHER"
        m = self.state.metrics
        m.requests.labels(endpoint=endpoint, method=method, status=str(status)).inc()
        m.request_latency.labels(endpoint=endpoint).observe(seconds)
        req_state = scope.get("state") or {}
        fields: dict[str, Any] = {
            "request_id": rid,
            "method": method,
            "route": endpoint,
            "status": status,
            "duration_ms": round(seconds * 1000.0, 2),
        }
        for key in ("batch_size", "queue_ms", "problem"):
            if key in req_state:
                fields[key] = req_state[key]
        self.log.info("request", extra=fields)


def _with_default_headers(raw: Iterable[tuple[bytes, bytes]], rid: str) -> list[Any]:
    """Response headers plus the request id and, unless the app set them, nosniff/no-store."""
    out = list(raw)
    present = {name.lower() for name, _ in out}
    out.append((REQUEST_ID_HEADER.lower().encode(), rid.encode()))
    out += [(k, v) for k, v in _DEFAULT_HEADERS if k not in present]
    return out


def _content_length(headers: Headers) -> int | None:
    raw = headers.get("content-length")
    if raw is None or not raw.strip().isdigit():
        return None
    return int(raw)


def _path(scope: Scope) -> str:
    return str(scope.get("path", "/"))
