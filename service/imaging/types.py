"""Value types of image ingestion."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

#: media types accepted, and the format each one declares (None = says nothing)
ACCEPTED_TYPES: dict[str, str | None] = {
    "application/dicom": "dicom",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",  # common misspelling
    "application/octet-stream": None,
    "": None,
}


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds enforced before any pixel is decoded."""

    max_bytes: int = 64 * 1024 * 1024  # request body / file size, bytes
    max_pixels: int = 50_000_000  # width * height, refuses decompression bombs
    min_side: int = 32  # smallest accepted width or height, pixels
    max_side: int | None = None  # longest side of the decoded pixels (downscaled); None = keep
    # JPEG / JPEG 2000 may be decoded at 1/2^k size while the shorter side stays >= this
    # (``imaging/reduced.py``); None = always decode in full. Only with a max_side.
    decode_min_side: int | None = 448


@dataclass(frozen=True)
class DicomFacts:
    """Non-identifying DICOM attributes used for rendering (safe to log and return)."""

    modality: str | None
    body_part: str | None
    view_position: str | None
    photometric_interpretation: str
    bits_stored: int
    transfer_syntax: str  # UID name, e.g. "JPEG 2000 Image Compression (Lossless Only)"
    rows: int
    columns: int


@dataclass(frozen=True)
class DicomStudyRef:
    """Source attributes a DICOM SR output needs to join the image's study and point at it.

    ``attributes``: (keyword, value) pairs read from the source (patient and study attributes,
    the series / SOP UIDs, Specific Character Set). Identifying: only the SR output reads them;
    they are never put in a JSON response or a log, and ``repr`` shows no value.
    """

    attributes: tuple[tuple[str, str], ...]

    def get(self, keyword: str) -> str | None:
        """The value of ``keyword`` in the source, or None when absent."""
        return dict(self.attributes).get(keyword)

    def __repr__(self) -> str:
        return f"DicomStudyRef(<{len(self.attributes)} attributes withheld>)"


@dataclass(frozen=True)
class DecodedImage:
    """A decoded radiograph: (h, w) float32 in [0, 1], white = dense (MONOCHROME2 sense).

    ``pixels`` may be downscaled (``DecodeLimits.max_side``); ``height`` / ``width`` are always
    those of the original image, the frame boxes are reported in.
    """

    pixels: np.ndarray
    source: str  # "dicom" | "png" | "jpeg"
    dicom: DicomFacts | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    original_hw: tuple[int, int] | None = None  # (H, W) before downscaling; None = pixels'
    study: DicomStudyRef | None = field(default=None, repr=False, compare=False)  # DICOM SR only

    @property
    def height(self) -> int:
        """Height of the original image, pixels."""
        return int(self.original_hw[0] if self.original_hw else self.pixels.shape[0])

    @property
    def width(self) -> int:
        """Width of the original image, pixels."""
        return int(self.original_hw[1] if self.original_hw else self.pixels.shape[1])


DecodeFn = Callable[[bytes, "str | None", DecodeLimits], DecodedImage]
HeatmapPngFn = Callable[[np.ndarray, bool], bytes]


@dataclass(frozen=True)
class Imaging:
    """The two imaging functions the API calls."""

    decode: DecodeFn  # (bytes, content type or None, limits) -> DecodedImage
    heatmap_png: HeatmapPngFn  # ((H, W) float32 in [0, 1], colormap) -> PNG bytes


def load_imaging() -> Imaging:
    """The real decoder and PNG encoder (imported here, not at module import)."""
    from service.imaging.decode import decode_image
    from service.inference.heatmaps import heatmap_png

    return Imaging(decode=decode_image, heatmap_png=heatmap_png)
