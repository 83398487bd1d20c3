"""Body -> DecodedImage: sniffing, content types, size limits, dispatch."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from service.imaging.decode import decode_image, media_type, sniff_format
from service.imaging.errors import ImageTooLarge, UndecodableImage, UnsupportedMediaType
from service.imaging.types import DecodeLimits

LIMITS = DecodeLimits()
NOISE = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()


def _img(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 251).astype(np.uint8)).save(buf, fmt)
    return buf.getvalue()


def _dicom(name: str = "MR_small.dcm") -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def _bare_dicom() -> bytes:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    del ds.file_meta
    ds.preamble = None
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=False, little_endian=True)
    return buf.getvalue()


def test_sniff_format() -> None:
    assert sniff_format(_dicom()) == "dicom"
    assert sniff_format(_dicom()[128:]) == "dicom"  # 'DICM' at 0
    assert sniff_format(_bare_dicom()) == "dicom"  # no preamble, no meta
    assert sniff_format(_dicom("OT-PAL-8-face.dcm")) == "dicom"  # a real preamble-less file
    assert sniff_format(_img("PNG")) == "png"
    assert sniff_format(_img("JPEG")) == "jpeg"
    assert sniff_format(_img("GIF")) is None
    assert sniff_format(NOISE) is None
    assert sniff_format(b"\x08\x00" + NOISE) is None  # plausible first group, then garbage
    assert sniff_format(b"") is None


def test_media_type_is_normalised() -> None:
    assert media_type(None) == "" and media_type("") == ""
    assert media_type(" Image/PNG ; charset=binary") == "image/png"
    assert media_type("text/plain<script>") == "text/plainscript"


@pytest.mark.parametrize("ctype", [None, "application/octet-stream", "image/png; q=1"])
def test_png_with_matching_or_neutral_type_has_no_warning(ctype: str | None) -> None:
    out = decode_image(_img("PNG"), ctype, LIMITS)
    assert out.source == "png" and out.warnings == () and out.pixels.shape == (64, 64)


def test_bytes_decide_and_a_contradicting_type_is_a_warning() -> None:
    out = decode_image(_img("PNG"), "application/dicom", LIMITS)
    assert out.source == "png" and "does not match" in out.warnings[0]
    out = decode_image(_dicom(), "image/jpeg", LIMITS)
    assert out.source == "dicom" and "does not match" in out.warnings[0]
    assert any("Modality MR" in w for w in out.warnings[1:])  # decoder warnings kept
    out = decode_image(_img("JPEG"), "text/plain", LIMITS)
    assert out.source == "jpeg" and len(out.warnings) == 1
    assert decode_image(_img("JPEG"), "image/jpg", LIMITS).warnings == ()


def test_dicom_body_with_and_without_preamble() -> None:
    a = decode_image(_dicom(), "application/dicom", LIMITS)
    b = decode_image(_bare_dicom(), None, LIMITS)
    assert a.source == b.source == "dicom" and np.array_equal(a.pixels, b.pixels)


def test_empty_oversize_and_unknown_bodies() -> None:
    with pytest.raises(UndecodableImage, match="empty"):
        decode_image(b"", "image/png", LIMITS)
    with pytest.raises(ImageTooLarge):
        decode_image(_img("PNG"), "image/png", DecodeLimits(max_bytes=100))
    for ctype in (None, "application/octet-stream", "text/plain"):
        with pytest.raises(UnsupportedMediaType):
            decode_image(NOISE, ctype, LIMITS)
    with pytest.raises(UnsupportedMediaType):
        decode_image(_img("GIF"), "image/gif", LIMITS)
    for ctype in ("image/png", "image/jpeg", "application/dicom"):
        with pytest.raises(UndecodableImage, match="declared as"):
            decode_image(NOISE, ctype, LIMITS)
