"""The one place that maps errors to HTTP: RFC 9457 ``application/problem+json`` responses.

Every error body has ``type`` (``PROBLEM_BASE`` + a stable slug), ``title``, ``status``,
``detail``, ``instance`` (the request path) and ``request_id``. Domain errors from below the API
(:class:`ImageError` kinds, the batcher's :class:`Overloaded` / :class:`JobTimeout`) are mapped
here; routes raise :class:`ApiError` for API-level problems. Refusals are counted in
``cxr_rejected_requests_total{reason}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.imaging.errors import ImageError
from service.inference.batching import JobTimeout, Overloaded

from .state import AppState, request_id_of

PROBLEM_BASE = "https://cxr.example/problems/"  # slugs documented in README.md
PROBLEM_MEDIA_TYPE = "application/problem+json"


@dataclass(frozen=True)
class Problem:
    """One kind of problem: slug (the end of ``type``), HTTP status, title, rejected reason."""

    slug: str
    status: int
    title: str
    reason: str | None = None  # label of cxr_rejected_requests_total, None = not counted

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug


BAD_REQUEST = Problem("bad-request", 400, "Malformed request", "validation")
UNAUTHORIZED = Problem("unauthorized", 401, "Missing or invalid API key", "auth")
NOT_FOUND = Problem("not-found", 404, "Not found")
METHOD_NOT_ALLOWED = Problem("method-not-allowed", 405, "Method not allowed")
NOT_ACCEPTABLE = Problem("not-acceptable", 406, "Not acceptable", "validation")
TOO_LARGE = Problem("too-large", 413, "Input too large", "too_large")
BODY_TIMEOUT = Problem("body-timeout", 408, "Request body not received in time", "body_timeout")
UNSUPPORTED = Problem(
    "unsupported-media-type", 415, "Unsupported media type", "unsupported_media_type"
)
UNDECODABLE = Problem("undecodable-image", 422, "Image cannot be decoded", "undecodable_image")
INVALID_IMAGE = Problem("invalid-image", 422, "Not a usable radiograph", "invalid_image")
VALIDATION = Problem("validation-error", 422, "Request validation failed", "validation")
INTERNAL = Problem("internal-error", 500, "Internal server error")
OVERLOADED = Problem("overloaded", 503, "Service overloaded, retry later", "overload")
NOT_READY = Problem("not-ready", 503, "Model not ready")
TIMEOUT = Problem("timeout", 504, "Processing timed out", "timeout")

ALL_PROBLEMS = (
    BAD_REQUEST, UNAUTHORIZED, NOT_FOUND, METHOD_NOT_ALLOWED, NOT_ACCEPTABLE, BODY_TIMEOUT,
    TOO_LARGE, UNSUPPORTED, UNDECODABLE, INVALID_IMAGE, VALIDATION, INTERNAL, OVERLOADED,
    NOT_READY, TIMEOUT,
)  # fmt: skip
_BY_IMAGE_KIND = {
    "unsupported_media_type": UNSUPPORTED,
    "undecodable_image": UNDECODABLE,
    "invalid_image": INVALID_IMAGE,
    "too_large": TOO_LARGE,
}
_BY_STATUS = {p.status: p for p in (BAD_REQUEST, NOT_FOUND, METHOD_NOT_ALLOWED, TOO_LARGE)}


class ApiError(Exception):
    """An API-level problem raised by routes and dependencies."""

    def __init__(
        self,
        problem: Problem,
        detail: str,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.problem = problem
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


def problem_response(
    problem: Problem,
    detail: str,
    *,
    instance: str,
    request_id: str,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """An ``application/problem+json`` response (extra members after the standard ones)."""
    body: dict[str, Any] = {
        "type": problem.type,
        "title": problem.title,
        "status": problem.status,
        "detail": detail,
        "instance": instance,
        "request_id": request_id,
        **(extra or {}),
    }
    return JSONResponse(
        body, status_code=problem.status, headers=dict(headers or {}), media_type=PROBLEM_MEDIA_TYPE
    )


def count_rejection(app_state: AppState | None, problem: Problem) -> None:
    """Increment ``cxr_rejected_requests_total{reason}`` when the problem has a reason."""
    if app_state is not None and problem.reason is not None:
        app_state.metrics.rejected.labels(reason=problem.reason).inc()


def _respond(request: Request, err: ApiError) -> JSONResponse:
    count_rejection(getattr(request.app.state, "cxr", None), err.problem)
    request.state.problem = err.problem.slug  # for the access log line
    return problem_response(
        err.problem,
        err.detail,
        instance=request.url.path,
        request_id=request_id_of(request.scope),
        headers=err.headers,
        extra=err.extra,
    )


def _retry_after(request: Request) -> dict[str, str]:
    st: AppState | None = getattr(request.app.state, "cxr", None)
    return {"Retry-After": str(st.settings.retry_after_s if st else 1)}


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    """Location, message and type of each error; never the offending input itself."""
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e["type"]}
        for e in exc.errors()
    ]


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    return _respond(request, exc if isinstance(exc, ApiError) else _unexpected())


async def _on_image_error(request: Request, exc: Exception) -> JSONResponse:
    kind = getattr(exc, "kind", "invalid_image")
    detail = getattr(exc, "detail", str(exc))
    return _respond(request, ApiError(_BY_IMAGE_KIND.get(kind, INVALID_IMAGE), str(detail)))


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    errs = _validation_errors(exc) if isinstance(exc, RequestValidationError) else []
    first = errs[0] if errs else {"loc": [], "msg": "invalid request"}
    detail = f"{'.'.join(first['loc']) or 'request'}: {first['msg']}"
    return _respond(request, ApiError(VALIDATION, detail, extra={"errors": errs}))


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    problem = _BY_STATUS.get(status) or Problem(f"http-{status}", status, HTTPStatus(status).phrase)
    detail = exc.detail if isinstance(exc, StarletteHTTPException) else ""
    headers = (exc.headers if isinstance(exc, StarletteHTTPException) else None) or {}
    return _respond(request, ApiError(problem, str(detail or problem.title), headers=headers))


async def _on_overloaded(request: Request, exc: Exception) -> JSONResponse:
    return _respond(request, ApiError(OVERLOADED, str(exc), headers=_retry_after(request)))


async def _on_timeout(request: Request, exc: Exception) -> JSONResponse:
    return _respond(request, ApiError(TIMEOUT, str(exc)))


def _unexpected() -> ApiError:
    return ApiError(INTERNAL, "an unexpected error occurred; see the server log")


def not_ready(detail: str, retry_after_s: int) -> ApiError:
    """503 while the weights load or after they failed to load."""
    return ApiError(NOT_READY, detail, headers={"Retry-After": str(retry_after_s)})


def internal_error_response(instance: str, request_id: str) -> JSONResponse:
    """The 500 problem for unexpected exceptions: no internals, only the request id."""
    err = _unexpected()
    return problem_response(INTERNAL, err.detail, instance=instance, request_id=request_id)


def install_error_handlers(app: FastAPI) -> None:
    """Register every problem mapping on ``app`` (unexpected errors: the request middleware)."""
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(ImageError, _on_image_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(Overloaded, _on_overloaded)
    app.add_exception_handler(JobTimeout, _on_timeout)
