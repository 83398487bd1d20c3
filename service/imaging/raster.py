"""PNG / JPEG bytes -> :class:`DecodedImage` with Pillow.

Decisions:
- grey output: 8-bit values / 255; 16-bit grey PNG values / (2**sBIT - 1) when the PNG has an
  sBIT chunk, else / 65535 (no min-max: a PNG carries no window, so its full range is kept);
  16-bit colour PNGs are reduced to 8 bits by Pillow;
- colour -> grey with Rec. 601 luma (0.299 R + 0.587 G + 0.114 B, what Pillow's "L" does),
  computed in float; a warning is added when the channels really differ;
- alpha (LA, RGBA, palette with transparency) is composited on black: value * alpha. A viewer
  shows radiographs on black, and black = no density;
- EXIF orientation is applied (``ImageOps.exif_transpose``);
- decompression bombs: the header size is checked against ``limits.max_pixels`` before
  ``load()``; Pillow's own ``DecompressionBombError`` (raised by ``Image.open`` over
  2 x ``Image.MAX_IMAGE_PIXELS``) is mapped to :class:`ImageTooLarge`. ``MAX_IMAGE_PIXELS`` is
  never modified, and ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left False so truncated files fail.
"""

from __future__ import annotations

import struct
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps

from service.imaging.errors import (
    ImageTooLarge,
    InvalidImage,
    UndecodableImage,
    UnsupportedMediaType,
)
from service.imaging.reduced import decode_hw
from service.imaging.types import DecodedImage, DecodeLimits
from service.imaging.working import shrink_image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8\xff"
_SOURCES = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg"}  # MPO = multi-picture JPEG (cameras)
_LUMA = np.array([0.299, 0.587, 0.114])
_COLOUR_TOLERANCE = 8 / 255  # channel spread above which an image counts as really colour


def png_significant_bits(data: bytes) -> int | None:
    """Grey significant bits from the PNG sBIT chunk (before IDAT), or None."""
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind in (b"IDAT", b"IEND"):
            return None
        if kind == b"sBIT" and length >= 1:
            return int(data[pos + 8])
        pos += 12 + length
    return None


def _open(data: bytes) -> Image.Image:
    """Open lazily (header only); map Pillow's failures to ImageError."""
    try:
        return Image.open(BytesIO(data), formats=["PNG", "JPEG"])
    except Image.DecompressionBombError:
        raise ImageTooLarge("image dimensions exceed the decompression-bomb limit") from None
    except Exception as exc:
        if data.startswith((PNG_SIGNATURE, JPEG_SOI)):
            raise UndecodableImage(
                f"PNG/JPEG header cannot be read ({type(exc).__name__})"
            ) from None
        raise UnsupportedMediaType("not a PNG or JPEG image") from None


def _check_size(width: int, height: int, limits: DecodeLimits) -> None:
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels, over {limits.max_pixels}"
        )
    if min(width, height) < limits.min_side:
        raise InvalidImage(f"image is {width}x{height}: sides under {limits.min_side} px")


def _luma(rgb: np.ndarray) -> tuple[np.ndarray, bool]:
    """(H, W, 3) in [0, 1] -> (H, W) luma, and whether the channels really differ."""
    spread = float((rgb.max(axis=2) - rgb.min(axis=2)).max()) if rgb.size else 0.0
    return rgb @ _LUMA, spread > _COLOUR_TOLERANCE


def to_grey(im: Image.Image, significant_bits: int | None = None) -> tuple[np.ndarray, list[str]]:
    """A loaded Pillow image -> float32 (H, W) in [0, 1], plus warnings."""
    mode = im.mode
    warnings: list[str] = []
    if mode.startswith("I;16") or mode == "I":
        bits = significant_bits if significant_bits and 1 <= significant_bits <= 16 else 16
        grey = np.asarray(im, dtype=np.float64) / float(2**bits - 1)
        return np.clip(grey, 0.0, 1.0).astype(np.float32), warnings
    if mode == "L":
        return (np.asarray(im, dtype=np.float32) / 255.0), warnings
    if mode == "P":
        has_alpha = "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode not in ("LA", "RGB", "RGBA"):
        im = im.convert("RGBA" if "A" in mode else "RGB")
    arr = np.asarray(im, dtype=np.float64) / 255.0
    if arr.ndim == 2:  # "1" converted to "L"
        return arr.astype(np.float32), warnings
    colour = arr[..., :-1] if im.mode in ("LA", "RGBA") else arr
    if colour.shape[2] == 3:
        grey, is_colour = _luma(colour)
        if is_colour:
            warnings.append("colour image converted to grey (Rec. 601 luma)")
    else:
        grey = colour[..., 0]
    if im.mode in ("LA", "RGBA"):
        alpha = arr[..., -1]
        if float(alpha.min()) < 1.0:
            warnings.append("transparent pixels composited on black")
        grey = grey * alpha
    return np.clip(grey, 0.0, 1.0).astype(np.float32), warnings


def _upright(im: Image.Image) -> list[str]:
    """Apply the EXIF orientation in place (no copy of an upright image); a malformed EXIF
    block is ignored with a warning."""
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except Exception:
        return ["EXIF orientation unreadable; image used as stored"]
    return []


def _draft(im: Image.Image, limits: DecodeLimits) -> None:
    """JPEG only: let libjpeg decode at 1/2, 1/4 or 1/8 scale while the shorter side stays
    >= ``limits.decode_min_side`` (``reduced.decode_hw``): the full-size image is never made."""
    h, w = decode_hw(im.height, im.width, limits.max_side, limits.decode_min_side)
    if im.format in ("JPEG", "MPO") and (h, w) != (im.height, im.width):
        im.draft(im.mode, (w, h))


def decode_raster(data: bytes, limits: DecodeLimits) -> DecodedImage:
    """Decode a PNG or JPEG to float32 (h, w) in [0, 1] (white = bright in the file).

    The pixels are downscaled to ``limits.max_side`` (JPEG: partly while decoding) before the
    float conversion; ``original_hw`` keeps the upright original size.

    Raises:
        UnsupportedMediaType: neither PNG nor JPEG.
        UndecodableImage: truncated or corrupt file.
        InvalidImage: sides under ``limits.min_side``.
        ImageTooLarge: width * height over ``limits.max_pixels`` (checked before decoding).
    """
    with _open(data) as im:
        source = _SOURCES.get(str(im.format), "")
        if not source:
            raise UnsupportedMediaType(f"image format {im.format} is not PNG or JPEG")
        _check_size(im.width, im.height, limits)
        stored_hw = (im.height, im.width)
        _draft(im, limits)
        try:
            im.load()
        except Exception as exc:
            raise UndecodableImage(
                f"{source.upper()} data cannot be decoded ({type(exc).__name__}): "
                "truncated or corrupt"
            ) from None
        loaded = im.size
        warnings = _upright(im)
        turned = im.size != loaded  # rotated by 90 degrees
        original_hw = stored_hw[::-1] if turned else stored_hw
        bits = png_significant_bits(data) if source == "png" else None
        pixels, grey_warnings = to_grey(shrink_image(im, limits.max_side), bits)
    return DecodedImage(
        pixels=pixels,
        source=source,
        warnings=(*warnings, *grey_warnings),
        original_hw=(int(original_hw[0]), int(original_hw[1])),
    )
