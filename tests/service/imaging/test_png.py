"""The heatmap PNG writer: any decoder reads back the exact pixels."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from service.imaging.png import SIGNATURE, encode_png


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (33, 65), (5, 6, 4), (1, 1, 4)])
def test_pillow_reads_back_the_exact_pixels(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(sum(shape))
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)  # random: Sub differences wrap mod 256
    data = encode_png(pixels)
    assert data.startswith(SIGNATURE)
    Image.open(io.BytesIO(data)).verify()  # chunk CRCs and structure
    img = Image.open(io.BytesIO(data))
    assert img.mode == ("L" if len(shape) == 2 else "RGBA") and img.size == shape[1::-1]
    np.testing.assert_array_equal(np.asarray(img), pixels)


def test_rows_are_sub_filtered_by_hand() -> None:
    """A 2 x 3 grey image: each row is filter byte 1, the first pixel, then left differences
    modulo 256."""
    pixels = np.array([[10, 30, 5], [200, 100, 255]], np.uint8)
    data = encode_png(pixels)
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8 : start - 4], "big")
    raw = zlib.decompress(data[start : start + length])
    assert list(raw) == [1, 10, 20, 231, 1, 200, 156, 155]  # 5 - 30 = -25 = 231 mod 256


def test_other_arrays_are_refused() -> None:
    for bad in (
        np.zeros((4, 4), np.float32),
        np.zeros((4, 4, 3), np.uint8),
        np.zeros((0, 4), np.uint8),
        np.zeros((2, 2, 2, 2), np.uint8),
    ):
        with pytest.raises(ValueError, match="uint8 pixels"):
            encode_png(bad)
