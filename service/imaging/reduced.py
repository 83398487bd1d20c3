"""Reduced-resolution decoding: never decode more pixels than the model can use.

The model sees a few hundred pixels a side, and heatmaps and boxes are drawn from its patch
grid, so decoding a 2000 px radiograph in full only to average it down wastes most of the
decode time. Two codecs can decode directly at a lower resolution:

- **JPEG**: libjpeg's DCT scaling (1/2, 1/4, 1/8), through Pillow's ``draft`` (``raster.py``);
- **JPEG 2000**: stop the inverse wavelet transform ``r`` levels early (openjpeg's reduce,
  through Pillow's plugin with openjpeg's size rounding: :func:`_load_reduced`), which yields
  the LL band: a 2^r-times smaller image that is the wavelet's low-pass of the full one.

Either keeps the shorter side at least ``DecodeLimits.decode_min_side`` (default 448 px, twice
the shipped model's input), so the model input differs from the full decode only by the
difference between two antialiasing filters (measured by ``benchmarks/bench_decode.py``).
"""

from __future__ import annotations

import math
from io import BytesIO

import numpy as np
from PIL import Image, ImageFile
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


def j2k_reduce(rows: int, columns: int, levels: int, min_side: int) -> int:
    """Largest r <= ``levels`` with ceil(min(rows, columns) / 2^r) >= ``min_side``; 0 = decode
    at full size."""
    best = 0
    for r in range(1, levels + 1):
        if math.ceil(min(rows, columns) / 2**r) < min_side:
            break
        best = r
    return best


def _load_reduced(im: ImageFile.ImageFile, reduce: int) -> None:
    """Load a Pillow JPEG 2000 image ``reduce`` wavelet levels early, sized as openjpeg sizes
    the reduced image: ceil(side / 2^r).

    Pillow's own ``reduce`` sizes it (side + 2^r / 2) // 2^r, which is one pixel short for
    sides such as 1841 at r = 2 (460 vs 461), and then reports a broken stream. This sets the
    size and the decoder tile Pillow's ``Jpeg2KImageFile.load`` would set, with openjpeg's
    rounding, and runs the plain ``ImageFile.load`` (Pillow >= 11, whose tile tuple holds
    (codec, reduce, layers, fd, length) as its fourth field).
    """
    power = 1 << reduce
    tile = im.tile[0]
    args = tile[3]
    if len(im.tile) != 1 or not isinstance(args, tuple) or len(args) != 5:
        raise ValueError("unexpected Pillow JPEG 2000 tile layout")
    im._size = (-(-im.width // power), -(-im.height // power))  # noqa: SLF001 (see docstring)
    im.tile = [
        ImageFile._Tile(tile[0], (0, 0, *im.size), tile[2], (args[0], reduce, *args[2:]))  # noqa: SLF001
    ]
    ImageFile.ImageFile.load(im)


def decode_j2k_reduced(
    codestream: bytes, reduce: int, rows: int, columns: int, bits: int
) -> np.ndarray:
    """(ceil(rows / 2^r), ceil(columns / 2^r)) unsigned stored values of a grey J2K frame, at
    the codestream's own precision (Pillow's 16-bit scaling undone).

    Raises ValueError when Pillow returns another shape or mode (the caller then decodes the
    frame in full with pydicom); OSError from openjpeg for a corrupt codestream.
    """
    with Image.open(BytesIO(codestream), formats=["JPEG2000"]) as im:
        if not isinstance(im, ImageFile.ImageFile):
            raise ValueError("JPEG 2000 frame opened as a non-file image")
        _load_reduced(im, reduce)
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
