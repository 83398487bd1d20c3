"""Malformed or unusual pixel content: J2K / JPEG codestreams that disagree with Rows /
Columns (as ``tests/service/imaging/test_codestream.py`` makes them), multi-frame, colour,
odd bit depths, tiny, extreme-aspect and constant images, EXIF orientation, animation, LUTs."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks import _malformed_images as im
from benchmarks._malformed_cases import DCM, JPEG, PNG, Case, _case, _dcm

BIG = 12_000


def _testdata(name: str) -> bytes:
    from pydicom.data import get_testdata_file

    return Path(str(get_testdata_file(name))).read_bytes()


def _siz(name: str, fmt: str, *values: int, offset: int = 8) -> Callable[[], bytes]:
    """A pydicom J2K test file with its SIZ marker segment patched (Xsiz, Ysiz...)."""
    return lambda: im.patch(_testdata(name), b"\xff\x4f\xff\x51", offset, fmt, *values)


def codestreams() -> Iterator[Case]:
    kind = "dicom-j2k-size-mismatch"
    yield _case(
        kind,
        "MR_small J2K SIZ 12000x12000",
        _siz("MR_small_jp2klossless.dcm", ">II", BIG, BIG),
        DCM,
    )
    yield _case(
        kind, "MR_small J2K SIZ 32x32", _siz("MR_small_jp2klossless.dcm", ">II", 32, 32), DCM
    )
    yield _case(
        kind, "MR_small J2K XOsiz 1", _siz("MR_small_jp2klossless.dcm", ">II", 1, 0, offset=16), DCM
    )
    yield _case(kind, "RG1_J2KR SIZ 12000x12000", _siz("RG1_J2KR.dcm", ">II", BIG, BIG), DCM)
    yield _case(
        kind,
        "JPGExtended SOF1 12000x12000",
        lambda: im.patch(_testdata("JPGExtended.dcm"), b"\xff\xc1\x00\x0b", 5, ">HH", BIG, BIG),
        DCM,
    )
    yield _case(
        kind,
        "JPEG-LS SOF55 12000x12000",
        lambda: im.patch(
            _testdata("MR_small_jpeg_ls_lossless.dcm"), b"\xff\xf7\x00\x0b", 5, ">HH", BIG, BIG
        ),
        DCM,
    )
    yield _case(
        kind,
        "J2K truncated codestream",
        lambda: im.cut(_testdata("MR_small_jp2klossless.dcm"), 0.7),
        DCM,
    )


def frames_and_colour() -> Iterator[Case]:
    g = im.synthetic(128)
    stack = np.stack([g, g[::-1], g[:, ::-1]]).astype(np.uint16)
    yield _case("dicom-multiframe", "3 frames", lambda: im.dicom(stack), DCM)
    yield _case(
        "dicom-multiframe",
        "NumberOfFrames 1000, 1 frame of data",
        _dcm({"NumberOfFrames": 1000}),
        DCM,
    )
    yield _case("dicom-multiframe", "NumberOfFrames 0", _dcm({"NumberOfFrames": 0}), DCM)
    rgb = np.stack([g, np.roll(g, 9, 0), 255 - g], axis=-1)
    rgba = np.concatenate([rgb, g[..., None]], axis=-1)
    la = np.stack([g, np.full_like(g, 200)], axis=-1)
    yield _case("colour", "RGB PNG", lambda: im.png(rgb))
    yield _case("colour", "RGBA PNG (alpha)", lambda: im.png(rgba))
    yield _case("colour", "LA PNG", lambda: im.png(la, mode="LA"))
    yield _case("colour", "palette PNG", lambda: _palette(rgb, transparency=False))
    yield _case("colour", "palette PNG + transparency", lambda: _palette(rgb, transparency=True))
    yield _case("colour", "RGB JPEG", lambda: im.jpeg(rgb), JPEG)
    yield _case("colour", "CMYK JPEG", lambda: _cmyk_jpeg(rgb), JPEG)
    yield _case("colour", "RGB DICOM", lambda: im.dicom(rgb), DCM)


def _palette(rgb: np.ndarray, transparency: bool) -> bytes:
    from PIL import Image

    p = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    buf = io.BytesIO()
    p.save(buf, "PNG", **({"transparency": 0} if transparency else {}))
    return buf.getvalue()


def _cmyk_jpeg(rgb: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, "JPEG")
    return buf.getvalue()


def depths_and_sizes() -> Iterator[Case]:
    g = im.synthetic(128)
    yield _case("bit-depth", "16-bit PNG", lambda: im.png(g.astype(np.uint16) * 257))
    yield _case("bit-depth", "1-bit PNG", lambda: im.png(g > 128))
    yield _case("bit-depth", "interlaced PNG", lambda: _pil(g, "PNG", interlace=1))
    yield _case("bit-depth", "progressive JPEG", lambda: im.jpeg(g, progressive=True), JPEG)
    yield _case("bit-depth", "8-bit DICOM", _dcm({}, bits16=False), DCM)
    for sbit in (0, 17):
        body = partial(_with_sbit, g, sbit)
        yield _case("png-sbit-odd", f"sBIT {sbit}", body)
    for side in (1, 31):
        yield _case("tiny-image", f"{side}x{side} PNG", partial(_synthetic_png, side))
    yield _case("tiny-image", "1x1 JPEG", lambda: im.jpeg(im.synthetic(1)), JPEG)
    yield _case("tiny-image", "1x1 DICOM", lambda: im.dicom(np.zeros((1, 1), np.uint16)), DCM)
    yield _case("tiny-image", "32x32 PNG (smallest legal)", lambda: im.png(im.synthetic(32)))
    yield _case("extreme-aspect", "32x10000 PNG", lambda: im.png(im.synthetic(10000, width=32)))
    yield _case(
        "extreme-aspect", "10000x32 JPEG", lambda: im.jpeg(im.synthetic(32, width=10000)), JPEG
    )
    yield _case("extreme-aspect", "1x50000 PNG", lambda: im.png(im.synthetic(1, width=50000)))
    for name, arr in (
        ("all-zero PNG", np.zeros((128, 128), np.uint8)),
        ("all-255 PNG", np.full((128, 128), 255, np.uint8)),
    ):
        yield _case("constant-image", name, partial(im.png, arr))
    for value in (0, 65535):
        yield _case(
            "constant-image",
            f"DICOM all {value}",
            partial(_constant_dicom, value),
            DCM,
        )


def _synthetic_png(side: int) -> bytes:
    return im.png(im.synthetic(side))


def _constant_dicom(value: int) -> bytes:
    return im.dicom(np.full((128, 128), value, np.uint16))


def _with_sbit(g: np.ndarray, sbit: int) -> bytes:
    return im.png_with_chunk(im.png(g), b"sBIT", bytes([sbit]))


def _jpeg_exif(g: np.ndarray, orientation: int) -> bytes:
    return im.jpeg(g, exif=_exif(orientation))


def _pil(arr: np.ndarray, fmt: str, **save: object) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **save)
    return buf.getvalue()


def _exif(orientation: int) -> bytes:
    from PIL import Image

    ex = Image.Exif()
    ex[0x0112] = orientation
    return ex.tobytes()


def exif_and_animation() -> Iterator[Case]:
    g = im.synthetic(160, width=96)
    for o in (6, 8, 3, 99):
        yield _case("exif-orientation", f"JPEG orientation {o}", partial(_jpeg_exif, g, o), JPEG)
    yield _case("exif-orientation", "PNG eXIf orientation 6", lambda: im.png(g, exif=_exif(6)))
    broken = b"\xff\xe1\x00\x10Exif\x00\x00MM\x00\x2a\xff\xff\xff\xff"
    yield _case(
        "exif-orientation", "JPEG broken EXIF", lambda: base_insert(im.jpeg(g), broken), JPEG
    )
    yield _case("animated", "APNG 3 frames", lambda: _apng(g))
    yield _case(
        "animated",
        "GIF 3 frames as octet-stream",
        lambda: _apng(g, "GIF"),
        "application/octet-stream",
    )
    lut = {"VOILUTSequence": _seq(LUTDescriptor=[0, 0, 16], LUTData=b"")}
    yield _case("dicom-bad-lut", "VOI LUT empty", _dcm(lut), DCM)
    short = {"VOILUTSequence": _seq(LUTDescriptor=[256, 0, 16], LUTData=b"\0\1" * 2)}
    yield _case("dicom-bad-lut", "VOI LUT of 2 entries for 256", _dcm(short), DCM)
    odd = {"VOILUTSequence": _seq(LUTDescriptor=[4, 0], LUTData=b"\0\1" * 4)}
    yield _case("dicom-bad-lut", "VOI LUT descriptor of 2 values", _dcm(odd), DCM)
    mod = {
        "ModalityLUTSequence": _seq(
            LUTDescriptor=[4, 0, 16], LUTData=b"\0\0\1\0", ModalityLUTType="HU"
        )
    }
    yield _case("dicom-bad-lut", "Modality LUT of 2 entries for 4", _dcm(mod), DCM)


def base_insert(jpeg: bytes, segment: bytes) -> bytes:
    """``segment`` inserted right after the JPEG SOI marker."""
    return jpeg[:2] + segment + jpeg[2:]


def _apng(g: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    frames = [Image.fromarray(np.roll(g, 10 * i, 0)) for i in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:])
    return buf.getvalue()


def _seq(**attrs: object) -> object:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    for k, v in attrs.items():
        setattr(item, k, v)
    return Sequence([item])


__all__ = ["PNG", "codestreams", "depths_and_sizes", "exif_and_animation", "frames_and_colour"]
