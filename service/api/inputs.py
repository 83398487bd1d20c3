"""Reading the image of a request (multipart ``file`` or a raw typed body) and its phrases.

Decoding itself is not done here: the routes call the ``Imaging`` functions
(``service.imaging.types``) reached through the ``get_imaging`` dependency, which tests replace
with ``app.dependency_overrides`` (``tests/service/api/test_dependency_overrides.py``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastapi import Request
from starlette.datastructures import UploadFile

from service.imaging.errors import UndecodableImage, UnsupportedMediaType
from service.imaging.types import ACCEPTED_TYPES, DecodeLimits
from service.settings import Settings

from .errors import BODY_TIMEOUT, VALIDATION, ApiError

#: raw body types: every media type the decoder accepts as naming a format
RAW_TYPES = tuple(t for t, fmt in ACCEPTED_TYPES.items() if fmt is not None)
MULTIPART = "multipart/form-data"
_MAX_FIELD_BYTES = 16 * 1024  # any non-file multipart field (phrases are far shorter)


@dataclass(frozen=True)
class Upload:
    """The image bytes of a request, their declared media type and other form fields."""

    data: bytes
    content_type: str | None  # None = not declared (the decoder sniffs)
    fields: dict[str, list[str]] = field(default_factory=dict)


def media_type(header: str | None) -> str | None:
    """``"image/png; x=y"`` -> ``"image/png"``; None for missing or generic types."""
    if not header:
        return None
    value = header.split(";", 1)[0].strip().lower()
    return None if value in ("", "application/octet-stream") else value


async def read_upload(request: Request, max_fields: int, timeout_s: float) -> Upload:
    """The image of a request; 415 for other content types, 422 when empty or missing.

    The whole body must arrive within ``timeout_s`` (one deadline for the request, not per
    chunk, so a client trickling bytes cannot extend it): 408 ``body-timeout`` after that.
    """
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_upload(request, max_fields)
    except TimeoutError:
        raise ApiError(
            BODY_TIMEOUT,
            f"the request body did not arrive within {timeout_s:g} s",
            headers={"Connection": "close"},
        ) from None


async def _read_upload(request: Request, max_fields: int) -> Upload:
    ctype = media_type(request.headers.get("content-type"))
    if ctype == MULTIPART:
        upload = await _read_multipart(request, max_fields)
    elif ctype in RAW_TYPES:
        upload = Upload(await request.body(), ctype)
    else:
        raise UnsupportedMediaType(
            f"got {ctype or 'no Content-Type'}; send multipart/form-data with a 'file' field, "
            f"or the raw image typed {', '.join(RAW_TYPES)}"
        )
    if not upload.data:
        raise UndecodableImage("the image is empty (0 bytes)")
    return upload


async def _read_multipart(request: Request, max_fields: int) -> Upload:
    form = await request.form(max_files=1, max_fields=max_fields, max_part_size=_MAX_FIELD_BYTES)
    try:
        part = form.get("file")
        if part is None:
            raise ApiError(VALIDATION, "multipart field 'file' (the image) is missing")
        if not isinstance(part, UploadFile):
            raise ApiError(VALIDATION, "multipart field 'file' must be a file upload")
        data = await part.read()
        fields = {
            k: [v for v in form.getlist(k) if isinstance(v, str)] for k in form if k != "file"
        }
        return Upload(data, media_type(part.content_type), fields)
    finally:
        await form.close()


def decode_limits(settings: Settings) -> DecodeLimits:
    """The decoder's bounds from the settings."""
    return DecodeLimits(
        max_bytes=settings.max_body_bytes,
        max_pixels=settings.max_pixels,
        min_side=settings.min_side,
        max_side=settings.working_max_side,
    )


def collect_phrases(query: list[str], upload: Upload, settings: Settings) -> list[str]:
    """Phrases from the query and the form (query first), stripped and checked; 422 if bad."""
    phrases = [p.strip() for p in (*query, *upload.fields.get("phrase", []))]
    if not phrases:
        raise ApiError(VALIDATION, "give at least one phrase (query or form field 'phrase')")
    if len(phrases) > settings.max_phrases:
        raise ApiError(VALIDATION, f"{len(phrases)} phrases; at most {settings.max_phrases}")
    for i, p in enumerate(phrases):
        if not p:
            raise ApiError(VALIDATION, f"phrase {i} is empty")
        if len(p) > settings.max_phrase_chars:
            raise ApiError(
                VALIDATION,
                f"phrase {i} has {len(p)} characters; at most {settings.max_phrase_chars}",
            )
        if not p.isprintable():
            raise ApiError(VALIDATION, f"phrase {i} contains control characters")
    return phrases


def heatmap_cap(requested: int | None, settings: Settings) -> int:
    """Longest heatmap side: the request's, at most ``CXR_HEATMAP_MAX_SIDE`` (its default), so
    a request cannot ask for more heatmap memory than the operator allowed."""
    return min(requested or settings.heatmap_max_side, settings.heatmap_max_side)


def heatmap_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(H, W) of the original image scaled so the longest side is at most ``max_side`` (never
    upscaled): heatmaps are in original-image pixels up to that side."""
    longest = max(height, width)
    if max_side >= longest:
        return height, width
    scale = max_side / longest
    return max(1, round(height * scale)), max(1, round(width * scale))
