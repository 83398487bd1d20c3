"""Domain errors of image ingestion. The API maps each ``kind`` to one HTTP status, in one place.

``kind`` values are stable slugs (they become the problem ``type`` URI and a metric label).
"""

from __future__ import annotations


class ImageError(ValueError):
    """Base class: the input image cannot be used. ``detail`` is safe to return (no PHI)."""

    kind = "invalid_image"

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


class UnsupportedMediaType(ImageError):
    """Not a format we accept (HTTP 415): unknown content type, or a DICOM transfer syntax
    no installed decoder handles (e.g. 12-bit JPEG Extended without the GPL plugin)."""

    kind = "unsupported_media_type"


class UndecodableImage(ImageError):
    """Claims a supported format but the bytes cannot be decoded (HTTP 422): truncated or
    corrupt files, DICOM without pixel data."""

    kind = "undecodable_image"


class InvalidImage(ImageError):
    """Decodes, but is not a single 2-D radiograph we can read (HTTP 422): multi-frame,
    colour palette, non-image DICOM objects, degenerate sizes."""

    kind = "invalid_image"


class ImageTooLarge(ImageError):
    """Pixel count or byte size over the configured limit (HTTP 413). Checked before decoding."""

    kind = "too_large"
