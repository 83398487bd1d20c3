"""Request body -> :class:`DecodedImage`: size checks, format sniffing, dispatch.

The bytes decide the format. The declared content type is only used to (a) refuse a body that
is neither recognisable nor declared as one of our formats (415), (b) call a body that *is*
declared as one of our formats but cannot be recognised undecodable (422), and (c) add a
warning when it contradicts the bytes.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np

from service.imaging.dicom import decode_dicom, looks_like_dicom
from service.imaging.errors import ImageTooLarge, UndecodableImage, UnsupportedMediaType
from service.imaging.raster import JPEG_SOI, PNG_SIGNATURE, decode_raster
from service.imaging.types import ACCEPTED_TYPES, DecodedImage, DecodeLimits

_MEDIA_TYPE_UNSAFE = re.compile(r"[^a-z0-9.+/-]")


def media_type(content_type: str | None) -> str:
    """``'Image/PNG; q=1'`` -> ``'image/png'``; None -> ``''``; at most 64 safe characters."""
    if not content_type:
        return ""
    return _MEDIA_TYPE_UNSAFE.sub("", content_type.split(";", 1)[0].strip().lower())[:64]


def sniff_format(data: bytes) -> str | None:
    """``'dicom'``, ``'png'``, ``'jpeg'`` from magic bytes, or None.

    DICOM: 'DICM' at offset 128 (or 0), else a preamble-less dataset that pydicom parses.
    """
    if data[128:132] == b"DICM":
        return "dicom"
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SOI):
        return "jpeg"
    if looks_like_dicom(data):
        return "dicom"
    return None


def decode_image(data: bytes, content_type: str | None, limits: DecodeLimits) -> DecodedImage:
    """Decode a DICOM, PNG or JPEG body to float32 (H, W) in [0, 1], white = dense.

    Raises:
        UndecodableImage: empty body; declared as a supported type but unrecognisable;
            or the decoder's own failures.
        ImageTooLarge: more than ``limits.max_bytes`` bytes (or the decoder's pixel limit).
        UnsupportedMediaType: neither the bytes nor the content type name a supported format.
        InvalidImage: from the decoders (multi-frame, colour DICOM, tiny images...).

    The pixels returned are always finite (NaN / infinity: UndecodableImage).
    """
    if not data:
        raise UndecodableImage("empty body: no image bytes")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"body is {len(data)} bytes, over the limit of {limits.max_bytes}")
    declared = media_type(content_type)
    fmt = sniff_format(data)
    expected = ACCEPTED_TYPES.get(declared)
    if fmt is None:
        if expected is not None:
            raise UndecodableImage(f"body declared as {declared} is not a readable {expected}")
        shown = declared or "no content type"
        raise UnsupportedMediaType(f"unrecognised image bytes ({shown}): send DICOM, PNG or JPEG")
    neutral = declared in ACCEPTED_TYPES and expected is None  # octet-stream or none
    warnings: tuple[str, ...] = ()
    if not neutral and expected != fmt:
        warnings = (f"content type {declared} does not match the bytes; decoded as {fmt}",)
    decoded = decode_dicom(data, limits) if fmt == "dicom" else decode_raster(data, limits)
    if not np.isfinite(decoded.pixels).all():  # the decoders refuse these; never pass one on
        raise UndecodableImage(f"the decoded {fmt} image holds NaN or infinite values")
    return replace(decoded, warnings=warnings + decoded.warnings)
