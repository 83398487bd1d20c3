"""PNG / JPEG decoding with Pillow: bit depths, modes, EXIF, limits, broken files."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.imaging.errors import (
    ImageTooLarge,
    InvalidImage,
    UndecodableImage,
    UnsupportedMediaType,
)
from service.imaging.raster import decode_raster, png_significant_bits
from service.imaging.types import DecodeLimits

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
LIMITS = DecodeLimits()


def _encode(array: np.ndarray, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR (8-bit grey) declaring a size, with a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 8))
        + _chunk(b"IEND", b"")
    )  # fmt: skip


def _ramp(h: int = 40, w: int = 60) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) % 256).astype(np.uint8)


def test_8_bit_grey_png_is_exact() -> None:
    out = decode_raster(_encode(_ramp()), LIMITS)
    assert out.source == "png" and out.pixels.dtype == np.float32 and out.pixels.shape == (40, 60)
    np.testing.assert_allclose(out.pixels, _ramp() / 255.0, atol=1e-7)
    assert out.warnings == ()


def test_16_bit_png_uses_the_full_range_or_its_sbit() -> None:
    values = (np.arange(64 * 48).reshape(48, 64) * 13).astype(np.uint16)
    data = _encode(values)
    out = decode_raster(data, LIMITS)
    np.testing.assert_allclose(out.pixels, values / 65535.0, atol=1e-7)
    twelve = (values % 4096).astype(np.uint16)
    plain = _encode(twelve)
    ihdr_end = 8 + 25
    with_sbit = plain[:ihdr_end] + _chunk(b"sBIT", b"\x0c") + plain[ihdr_end:]
    assert png_significant_bits(with_sbit) == 12 and png_significant_bits(plain) is None
    np.testing.assert_allclose(decode_raster(with_sbit, LIMITS).pixels, twelve / 4095.0, atol=1e-7)


def test_rgba_is_composited_on_black() -> None:
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:, :20, 3] = 255
    rgba[:, 20:, 3] = 0
    out = decode_raster(_encode(rgba), LIMITS)
    np.testing.assert_allclose(out.pixels[:, :20], 200 / 255.0, atol=1e-6)
    assert np.all(out.pixels[:, 20:] == 0)
    assert any("composited on black" in w for w in out.warnings)


def test_grey_alpha_palette_and_colour_modes() -> None:
    la = np.dstack([_ramp(), np.full((40, 60), 255, np.uint8)])
    out = decode_raster(_encode(la), LIMITS)
    np.testing.assert_allclose(out.pixels, _ramp() / 255.0, atol=1e-6)
    assert out.warnings == ()  # fully opaque: no compositing warning
    pal = Image.fromarray(_ramp()).convert("P")
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    np.testing.assert_allclose(
        decode_raster(buf.getvalue(), LIMITS).pixels, _ramp() / 255, atol=1e-6
    )
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 255  # pure red -> luma 0.299
    red = decode_raster(_encode(rgb), LIMITS)
    np.testing.assert_allclose(red.pixels, 0.299, atol=1e-6)
    assert any("colour" in w for w in red.warnings)


def test_jpeg_exif_orientation_6_is_applied() -> None:
    stored = np.zeros((32, 64), np.uint8)  # 64 wide, 32 high; left half white
    stored[:, :32] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the 0th column is the visual top
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    out = decode_raster(buf.getvalue(), LIMITS)
    assert out.source == "jpeg" and out.pixels.shape == (64, 32)
    assert out.pixels[:28].mean() > 0.95 and out.pixels[36:].mean() < 0.05


def test_truncated_files_are_undecodable() -> None:
    png = _encode(np.random.default_rng(0).integers(0, 256, (200, 200), dtype=np.uint8))
    jpeg = _encode(np.random.default_rng(1).integers(0, 256, (200, 200), dtype=np.uint8), "JPEG")
    for data in (png[: len(png) // 2], jpeg[: len(jpeg) // 2], png[:20]):
        with pytest.raises(UndecodableImage):
            decode_raster(data, LIMITS)


def test_decompression_bombs_are_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLarge):  # 1e10 pixels: Pillow's own bomb check fires in open()
        decode_raster(_png_header_only(100_000, 100_000), LIMITS)
    with pytest.raises(ImageTooLarge, match="8000x8000"):  # 64M: under Pillow's, over ours
        decode_raster(_png_header_only(8000, 8000), LIMITS)
    with pytest.raises(ImageTooLarge):
        decode_raster(_encode(_ramp()), DecodeLimits(max_pixels=40 * 60 - 1))
    with pytest.raises(InvalidImage, match="sides under"):
        decode_raster(_encode(_ramp(20, 60)), LIMITS)


def test_other_formats_are_unsupported() -> None:
    gif = io.BytesIO()
    Image.fromarray(_ramp()).save(gif, format="GIF")
    with pytest.raises(UnsupportedMediaType):
        decode_raster(gif.getvalue(), LIMITS)


def test_real_nih_png_and_kermany_jpeg() -> None:
    pngs = sorted((SHARED / "nih-1024").glob("*.png"))
    jpegs = sorted((SHARED / "kermany-cxr-224" / "train" / "NORMAL").glob("*.jpeg"))[:1]
    if not pngs or not jpegs:
        pytest.skip(f"real data not available under {SHARED}")
    nih = decode_raster(pngs[0].read_bytes(), LIMITS)
    assert nih.pixels.shape == (1024, 1024) and 0.05 < float(nih.pixels.std())
    kermany = decode_raster(jpegs[0].read_bytes(), LIMITS)  # RGB file, grey content
    assert kermany.pixels.shape == (224, 224) and kermany.warnings == ()
