"""The compressed frame's own header is checked against Rows / Columns before decoding.

Crafted DICOMs: real JPEG 2000 / JPEG / JPEG-LS files whose frame header (SIZ, SOFn, SOF55)
is patched to say 12000x12000 while the DICOM header still says the small true size. Without
the check the decoder allocates the codestream's size (hundreds of MB from a few KB).
"""

from __future__ import annotations

import resource
import struct
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from service.imaging.codestream import JP2_SIGNATURE, first_frame_head, frame_header
from service.imaging.decode import decode_image
from service.imaging.dicom import decode_dicom, read_dataset
from service.imaging.errors import UndecodableImage
from service.imaging.types import DecodeLimits

BIG = 12_000
SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "dicom"


def _raw(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def _patch(data: bytes, marker: bytes, offset: int, fmt: str, *values: int) -> bytes:
    """``values`` packed with ``fmt`` at ``offset`` after the first ``marker`` in ``data``."""
    at = data.index(marker) + offset
    packed = struct.pack(fmt, *values)
    return data[:at] + packed + data[at + len(packed) :]


def _j2k_bomb(data: bytes) -> bytes:
    """SIZ Xsiz / Ysiz (after SOC SIZ Lsiz Rsiz) set to BIG, offsets left as they are."""
    return _patch(data, b"\xff\x4f\xff\x51", 8, ">II", BIG, BIG)


CASES = {  # file -> (true rows, columns), patched bytes
    "MR_small_jp2klossless.dcm": ((64, 64), _j2k_bomb),
    "JPGExtended.dcm": ((1024, 256), lambda d: _patch(d, b"\xff\xc1\x00\x0b", 5, ">HH", BIG, BIG)),
    "MR_small_jpeg_ls_lossless.dcm": (
        (64, 64),
        lambda d: _patch(d, b"\xff\xf7\x00\x0b", 5, ">HH", BIG, BIG),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_frame_header_is_read_from_real_files(name: str) -> None:
    (rows, cols), _ = CASES[name]
    head = frame_header(first_frame_head(read_dataset(_raw(name)).PixelData))
    assert head is not None and (head.rows, head.columns, head.components) == (rows, cols, 1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_frame_larger_than_the_header_is_refused_before_decoding(name: str) -> None:
    _, patch = CASES[name]
    bomb = patch(_raw(name))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(UndecodableImage, match=f"{BIG}x{BIG}.*over .*refused before decoding"):
        decode_dicom(bomb, DecodeLimits())
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 50 * 1024  # the 12000x12000 frame was never allocated


def test_real_j2k_radiograph_with_a_patched_siz_is_a_422_problem(make_client) -> None:
    path = SHARED / "RG1_J2KR.dcm"
    data = path.read_bytes() if path.exists() else _raw("RG1_J2KR.dcm")
    with make_client() as c:
        r = c.post(
            "/v1/report", content=_j2k_bomb(data), headers={"content-type": "application/dicom"}
        )
    assert r.status_code == 422, r.text
    body = r.json()
    assert (
        body["type"].endswith("/undecodable-image") and "refused before decoding" in body["detail"]
    )


def test_smaller_or_offset_frame_is_refused_too() -> None:
    data = _raw("MR_small_jp2klossless.dcm")
    small = _patch(data, b"\xff\x4f\xff\x51", 8, ">II", 32, 32)
    with pytest.raises(UndecodableImage, match="32x32"):
        decode_image(small, "application/dicom", DecodeLimits())
    offset = _patch(data, b"\xff\x4f\xff\x51", 16, ">II", 1, 0)  # XOsiz 1: 63 columns
    with pytest.raises(UndecodableImage, match="63x64"):
        decode_image(offset, "application/dicom", DecodeLimits())


def test_jp2_box_form_and_broken_headers() -> None:
    cs = first_frame_head(read_dataset(_raw("MR_small_jp2klossless.dcm")).PixelData)
    ftyp = struct.pack(">I4s", 20, b"ftyp") + b"jp2 " + bytes(4) + b"jp2 "
    jp2 = JP2_SIGNATURE + ftyp + struct.pack(">I4s", 8 + len(cs), b"jp2c") + cs
    head = frame_header(jp2)
    assert head is not None and (head.kind, head.rows, head.columns) == ("JPEG 2000", 64, 64)
    assert frame_header(b"\x00\x01 not a codestream") is None
    for broken in (cs[:20], JP2_SIGNATURE + ftyp, b"\xff\xd8\xff\xda\x00\x02"):
        with pytest.raises(ValueError):
            frame_header(broken)
