"""Decoded images are downscaled once to the working side; the original size is kept.

The memory of one request must not grow with the upload's pixel count beyond the decoder's
own buffer: a 7000x7000 PNG (tiny when compressed) used to take +2.2 GB peak RSS.
"""

from __future__ import annotations

import io
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

import service.imaging.dicom_render as dicom_render
from service.imaging.decode import decode_image
from service.imaging.dicom import decode_dicom
from service.imaging.types import DecodeLimits
from service.imaging.working import reduce_factor, shrink_pixels, working_hw

REPO = Path(__file__).resolve().parents[3]
WORKING = DecodeLimits(max_side=1024)


def _png(mode: str, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (120,) * len(mode)).save(buf, format="PNG")
    return buf.getvalue()


def test_working_size_and_reduce_factor() -> None:
    assert working_hw(7000, 7000, 1024) == (1024, 1024)
    assert working_hw(3000, 1500, 1024) == (1024, 512)
    assert working_hw(800, 600, 1024) == (800, 600) and working_hw(5000, 10, None) == (5000, 10)
    assert reduce_factor(7000, 3000, 1024) == 6 and reduce_factor(900, 900, 1024) == 1


def test_7000_square_png_decodes_to_a_bounded_array_with_its_original_size() -> None:
    img = decode_image(_png("L", (7000, 7000)), "image/png", WORKING)
    assert img.pixels.shape == (1024, 1024) and img.pixels.dtype == np.float32
    assert (img.height, img.width) == (7000, 7000)
    assert np.allclose(img.pixels, 120 / 255, atol=1e-3)


_PEAK = """
import resource, sys
from service.imaging.decode import decode_image
from service.imaging.types import DecodeLimits
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
img = decode_image(data, "image/png", DecodeLimits(max_side=1024))
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(max(img.pixels.shape), grown // 1024)
"""


def test_peak_rss_of_a_7000_square_rgb_png_is_bounded(tmp_path: Path) -> None:
    """Fresh process: 4 B/px Pillow buffer (~200 MB) + small; was +2.2 GB (float64 RGB)."""
    path = tmp_path / "big.png"
    path.write_bytes(_png("RGB", (7000, 7000)))
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path)], cwd=REPO, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    side, grown_mb = map(int, out.stdout.split())
    assert side == 1024 and grown_mb < 600, out.stdout


def test_large_jpeg_is_drafted_and_exif_rotation_keeps_the_upright_original_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: the upright image is 3000 wide, 4000 high
    buf = io.BytesIO()
    Image.new("L", (4000, 3000), 90).save(buf, format="JPEG", exif=exif.tobytes())
    img = decode_image(buf.getvalue(), "image/jpeg", WORKING)
    assert (img.height, img.width) == (4000, 3000)
    assert img.pixels.shape == (1000, 750)  # DCT-scaled by 1/4: shorter side still >= 448
    full = decode_image(buf.getvalue(), "image/jpeg", replace(WORKING, decode_min_side=None))
    assert full.pixels.shape == (1024, 768)  # without reduced decoding: the working size


def test_small_images_are_unchanged() -> None:
    data = _png("L", (300, 200))
    full = decode_image(data, "image/png", DecodeLimits())
    small = decode_image(data, "image/png", WORKING)
    assert np.array_equal(full.pixels, small.pixels) and small.original_hw == (200, 300)


def test_dicom_strips_and_block_reduction_match_the_whole_image(monkeypatch) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # 128 x 128
    stored = ds.pixel_array
    whole, warnings = dicom_render.render(stored, ds)
    monkeypatch.setattr(dicom_render, "STRIP_ROWS", 7)  # many strips, last one partial
    strips, strip_warnings = dicom_render.render(stored, ds)
    assert np.array_equal(whole, strips) and warnings == strip_warnings
    reduced, _ = dicom_render.render(stored, ds, factor=3)
    expected = np.asarray(Image.fromarray(whole).reduce(3))
    assert reduced.shape == (43, 43) and np.allclose(reduced, expected, atol=1e-6)


def test_large_dicom_is_reduced_with_its_original_size() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    big = np.kron(ds.pixel_array, np.ones((24, 16), ds.pixel_array.dtype))  # 3072 x 2048
    ds.Rows, ds.Columns = big.shape
    ds.PixelData = big.tobytes()
    buf = io.BytesIO()
    ds.save_as(buf)
    img = decode_dicom(buf.getvalue(), DecodeLimits(max_bytes=64 << 20, max_side=1024))
    assert (img.height, img.width) == (3072, 2048) and img.pixels.shape == (1024, 683)
    full = decode_dicom(buf.getvalue(), DecodeLimits(max_bytes=64 << 20))
    assert np.abs(shrink_pixels(full.pixels, 1024) - img.pixels).mean() < 0.01


@pytest.mark.parametrize("side", [None, 512])
def test_shrink_pixels_keeps_the_range(side: int | None) -> None:
    pixels = np.random.default_rng(0).random((2000, 1000), dtype=np.float32)
    out = shrink_pixels(pixels, side)
    assert out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0
    assert out.shape == ((2000, 1000) if side is None else (512, 256))
