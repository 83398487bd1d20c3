"""A small typed client of the report service (httpx): :class:`CxrClient` and
:class:`AsyncCxrClient` with the same methods.

>>> with CxrClient("http://127.0.0.1:8000", api_key="...") as cxr:  # doctest: +SKIP
...     report = cxr.report(Path("chest.dcm"), beam_size=3, heatmaps=False)

Images go as multipart ``file`` (bytes or a path). A 503 (overloaded / not ready) is retried
up to ``max_retries`` times, waiting ``Retry-After`` seconds (capped at ``max_retry_wait``;
exponential back-off when the header is missing). Any other 4xx/5xx, or a 503 after the last
try, raises :class:`CxrClientError` with the RFC 9457 problem the service sent.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

Json = dict[str, Any]
Image = bytes | os.PathLike[str]
Option = bool | int | float

FHIR_MEDIA_TYPE = "application/fhir+json"
SR_MEDIA_TYPE = "application/dicom"  # a DICOM Structured Report (DICOM inputs only)
USER_AGENT = "ssacl-cxr-client/0.1"
REPORT_OPTIONS = frozenset(
    {
        "beam_size",
        "max_new_tokens",
        "heatmaps",
        "heatmap_size",
        "colormap",
        "min_new_tokens",
        "repetition_penalty",
        "length_penalty",
    }
)
GROUND_OPTIONS = frozenset({"heatmaps", "heatmap_size", "colormap"})
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
)


class CxrClientError(Exception):
    """An error answer (or an unusable one); ``problem`` is the problem+json body when sent."""

    def __init__(self, status_code: int, message: str, problem: Json | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.problem: Json = problem or {}

    @property
    def detail(self) -> str | None:
        value = self.problem.get("detail")
        return value if isinstance(value, str) else None

    @property
    def type(self) -> str | None:
        value = self.problem.get("type")
        return value if isinstance(value, str) else None

    @property
    def request_id(self) -> str | None:
        value = self.problem.get("request_id")
        return value if isinstance(value, str) else None


def _read_image(image: Image) -> tuple[str, bytes, str]:
    """(file name, bytes, media type) of a multipart ``file`` part; the server sniffs too."""
    if isinstance(image, bytes | bytearray):
        name, data = "image", bytes(image)
    else:
        path = Path(image)
        name, data = path.name, path.read_bytes()
    if data[128:132] == b"DICM":
        return name, data, "application/dicom"
    for magic, media in _SIGNATURES:
        if data.startswith(magic):
            return name, data, media
    return name, data, "application/octet-stream"


def _params(options: Mapping[str, Option], allowed: frozenset[str]) -> dict[str, str]:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; allowed: {sorted(allowed)}")
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in options.items()}


def retry_after_s(response: httpx.Response, attempt: int, cap: float) -> float:
    """Seconds to wait before retrying: ``Retry-After`` (seconds or HTTP date) or back-off."""
    header = response.headers.get("retry-after", "").strip()
    wait = 0.5 * 2.0**attempt
    if header.isdigit():
        wait = float(header)
    elif header:
        try:
            when = parsedate_to_datetime(header)
            wait = (when - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError):
            pass
    return min(max(wait, 0.0), cap)


def _problem(response: httpx.Response) -> Json | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _checked(response: httpx.Response, fhir: bool = False) -> Json:
    """The JSON body of a success, else :class:`CxrClientError`."""
    if response.is_error:
        problem = _problem(response)
        title = (problem or {}).get("title") or response.reason_phrase
        detail = (problem or {}).get("detail") or response.text[:200]
        raise CxrClientError(
            response.status_code, f"{response.status_code} {title}: {detail}", problem
        )
    body = _problem(response)
    if body is None:
        raise CxrClientError(response.status_code, "the answer is not a JSON object")
    if fhir and body.get("resourceType") != "Bundle":
        ctype = response.headers.get("content-type", "")
        raise CxrClientError(response.status_code, f"expected a FHIR Bundle, got {ctype}")
    return body


def _checked_sr(response: httpx.Response) -> bytes:
    """The DICOM SR bytes of a success, else :class:`CxrClientError` (406 for a non-DICOM input)."""
    if response.is_error:
        _checked(response)  # raises CxrClientError with the problem
    ctype = response.headers.get("content-type", "")
    if not ctype.startswith(SR_MEDIA_TYPE):
        raise CxrClientError(response.status_code, f"expected {SR_MEDIA_TYPE}, got {ctype}")
    return response.content


class _Base:
    """What both clients share: settings, headers and request building."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        *,
        max_retries: int = 3,
        max_retry_wait: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if api_key:
            self.headers["X-API-Key"] = api_key

    def _request_args(
        self,
        image: Image,
        params: dict[str, str],
        phrases: Sequence[str] = (),
        accept: str | None = None,
    ) -> Json:
        """Keyword arguments of one request; ``accept`` overrides the JSON ``Accept``."""
        headers = {"Accept": accept} if accept else {}
        args: Json = {"files": {"file": _read_image(image)}, "params": params, "headers": headers}
        if phrases:
            args["data"] = {"phrase": list(phrases)}
        return args


class CxrClient(_Base):
    """Blocking client. ``transport`` (e.g. ``httpx.MockTransport``) and ``sleep`` for tests."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        *,
        max_retries: int = 3,
        max_retry_wait: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            base_url, api_key, timeout, max_retries=max_retries, max_retry_wait=max_retry_wait
        )
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> CxrClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            response = self._http.request(method, path, **kwargs)
            if response.status_code != 503 or attempt == self.max_retries:
                return response
            self._sleep(retry_after_s(response, attempt, self.max_retry_wait))
        raise AssertionError("unreachable")

    def report(self, image: Image, **options: Option) -> Json:
        """``POST /v1/report``: the ReportResponse JSON; options as in the README."""
        args = self._request_args(image, _params(options, REPORT_OPTIONS))
        return _checked(self._send("POST", "/v1/report", **args))

    def report_fhir(self, image: Image, **options: Option) -> Json:
        """``POST /v1/report`` with ``Accept: application/fhir+json``: a FHIR R4 Bundle."""
        args = self._request_args(image, _params(options, REPORT_OPTIONS), accept=FHIR_MEDIA_TYPE)
        return _checked(self._send("POST", "/v1/report", **args), fhir=True)

    def report_sr(self, image: Image, **options: Option) -> bytes:
        """``POST /v1/report`` with ``Accept: application/dicom``: a DICOM SR (Part 10 bytes)
        in the input's study; the image must be DICOM (else 406 ``not-acceptable``)."""
        args = self._request_args(image, _params(options, REPORT_OPTIONS), accept=SR_MEDIA_TYPE)
        return _checked_sr(self._send("POST", "/v1/report", **args))

    def ground(self, image: Image, phrases: Sequence[str], **options: Option) -> Json:
        """``POST /v1/ground``: one grounding per phrase (sent as form fields)."""
        args = self._request_args(image, _params(options, GROUND_OPTIONS), phrases)
        return _checked(self._send("POST", "/v1/ground", **args))

    def model(self) -> Json:
        """``GET /v1/model``."""
        return _checked(self._send("GET", "/v1/model"))


class AsyncCxrClient(_Base):
    """Asyncio client with the same methods as :class:`CxrClient` (awaitable)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        *,
        max_retries: int = 3,
        max_retry_wait: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(
            base_url, api_key, timeout, max_retries=max_retries, max_retry_wait=max_retry_wait
        )
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncCxrClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.max_retries + 1):
            response = await self._http.request(method, path, **kwargs)
            if response.status_code != 503 or attempt == self.max_retries:
                return response
            await self._sleep(retry_after_s(response, attempt, self.max_retry_wait))
        raise AssertionError("unreachable")

    async def report(self, image: Image, **options: Option) -> Json:
        args = self._request_args(image, _params(options, REPORT_OPTIONS))
        return _checked(await self._send("POST", "/v1/report", **args))

    async def report_fhir(self, image: Image, **options: Option) -> Json:
        args = self._request_args(image, _params(options, REPORT_OPTIONS), accept=FHIR_MEDIA_TYPE)
        return _checked(await self._send("POST", "/v1/report", **args), fhir=True)

    async def report_sr(self, image: Image, **options: Option) -> bytes:
        args = self._request_args(image, _params(options, REPORT_OPTIONS), accept=SR_MEDIA_TYPE)
        return _checked_sr(await self._send("POST", "/v1/report", **args))

    async def ground(self, image: Image, phrases: Sequence[str], **options: Option) -> Json:
        args = self._request_args(image, _params(options, GROUND_OPTIONS), phrases)
        return _checked(await self._send("POST", "/v1/ground", **args))

    async def model(self) -> Json:
        return _checked(await self._send("GET", "/v1/model"))
