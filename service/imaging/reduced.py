"""Reduced-resolution decoding: never decode more pixels than the model can use.

The model sees a few hundred pixels a side, and heatmaps and boxes are drawn from its patch
grid, so decoding a 2000 px radiograph in full only to average it down wastes most of the
decode time. Two codecs can decode directly at a lower resolution:

- **JPEG**: libjpeg's DCT scaling (1/2, 1/4, 1/8), through Pillow's ``draft`` (``raster.py``);
- **JPEG 2000**: stop the inverse wavelet transform ``r`` levels early (``Image.reduce = r``
  in Pillow's openjpeg plugin), which yields the LL band: a 2^r-times smaller image that is
  the wavelet's low-pass of the full one.

Either keeps the shorter side at least ``DecodeLimits.decode_min_side`` (default 448 px, twice
the shipped model's input), so the model input differs from the full decode only by the
difference between two antialiasing filters (measured by ``benchmarks/bench_decode.py``).
"""

from __future__ import annotations

import math
from io import BytesIO

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import JPEG2000, UID, JPEG2000Lossless

from service.imaging.codestream import first_frame_head, frame_header
from service.imaging.types import DecodeLimits, DicomFacts

J2K_REDUCIBLE = frozenset({JPEG2000Lossless, JPEG2000})  # decoded at a reduced resolution


def decode_hw(
    height: int, width: int, max_side: int | None, min_side: int | None
) -> tuple[int, int]:
    """The smallest (H, W) worth decoding: shorter side >= ``min_side``, longest side at most
    ``max_side``; the image's own size when either bound is None or it is already smaller."""
    if max_side is None or min_side is None:
        return height, width
    scale = min(1.0, max_side / max(height, width), max(min_side / min(height, width), 0.0))
    return max(1, math.ceil(height * scale)), max(1, math.ceil(width * scale))


def _pillow_size_agrees(side: int, r: int) -> bool:
    """Pillow sizes a reduced J2K image as (side + 2^r / 2) // 2^r, openjpeg as ceil(side / 2^r);
    where they differ, Pillow reports a broken stream, so that level is not used."""
    power = 1 << r
    return (side + (power >> 1)) // power == -(-side // power)


def j2k_reduce(rows: int, columns: int, levels: int, min_side: int) -> int:
    """Largest r <= ``levels`` with both ceil(side / 2^r) >= ``min_side`` (0 = full size) that
    Pillow can decode (:func:`_pillow_size_agrees`)."""
    best = 0
    for r in range(1, levels + 1):
        if math.ceil(min(rows, columns) / 2**r) < min_side:
            break
        if _pillow_size_agrees(rows, r) and _pillow_size_agrees(columns, r):
            best = r
    return best


def decode_j2k_reduced(
    codestream: bytes, reduce: int, rows: int, columns: int, bits: int
) -> np.ndarray:
    """(ceil(rows / 2^r), ceil(columns / 2^r)) unsigned stored values of a grey J2K frame, at
    the codestream's own precision (Pillow's 16-bit scaling undone).

    Raises ValueError when Pillow returns another shape or mode (the caller then decodes the
    frame in full with pydicom); OSError from openjpeg for a corrupt codestream.
    """
    with Image.open(BytesIO(codestream), formats=["JPEG2000"]) as im:
        im.reduce = reduce  # type: ignore[assignment,method-assign]  # J2K: decoding level
        im.load()
        if im.mode not in ("L", "I;16", "I;16B", "I;16L", "I"):
            raise ValueError(f"JPEG 2000 frame decoded as mode {im.mode}")
        arr = np.asarray(im)
    if arr.dtype == np.uint16 and 0 < bits < 16:  # Pillow scales to 16 bits: undo it
        arr = arr >> (16 - bits)
    want = (math.ceil(rows / 2**reduce), math.ceil(columns / 2**reduce))
    if arr.shape != want:
        raise ValueError(f"JPEG 2000 frame decoded as {arr.shape}, expected {want}")
    return arr


def decode_reduced_j2k(ds: Dataset, facts: DicomFacts, limits: DecodeLimits) -> np.ndarray | None:
    """Stored values of a grey, unsigned JPEG 2000 frame decoded 2^r times smaller while the
    shorter side stays >= ``limits.decode_min_side``; None = the caller decodes it in full."""
    if limits.decode_min_side is None or limits.max_side is None:
        return None
    if (
        UID(str(ds.file_meta.TransferSyntaxUID)) not in J2K_REDUCIBLE
        or ds.get("PixelRepresentation") != 0
    ):
        return None
    if (ds.get("SamplesPerPixel") or 1) != 1 or int(ds.get("NumberOfFrames") or 1) != 1:
        return None
    try:
        head = frame_header(first_frame_head(ds.PixelData))
        if head is None or head.kind != "JPEG 2000":
            return None
        r = j2k_reduce(facts.rows, facts.columns, head.levels or 0, limits.decode_min_side)
        if r == 0:  # nothing to gain: the caller decodes in full, the frame is not joined here
            return None
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        return decode_j2k_reduced(frame, r, facts.rows, facts.columns, head.bits)
    except Exception:  # the caller's full decode (pydicom) then reports the error precisely
        return None
