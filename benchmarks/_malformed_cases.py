"""The image-side malformed inputs of the reliability benchmark: one :class:`Case` per request.

Kinds: every file of pydicom's test data and of the ``pydicom-data`` package, truncated
PNG / JPEG / DICOM, empty and random bodies, wrong content types, lying PNG / JPEG / DICOM
headers, decompression bombs, NaN windows and rescales, J2K codestreams that disagree with
Rows / Columns, multi-frame, colour, odd bit depths, tiny, extreme and constant images, EXIF.
Bodies are built lazily (``Case.make``), so a ``--limit`` run never builds the large ones.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import numpy as np

from benchmarks import _malformed_images as im

#: cheap generation for every case: the point is input handling, not report quality
CHEAP = (("beam_size", "1"), ("max_new_tokens", "8"), ("heatmap_size", "64"))
PNG, JPEG, DCM = "image/png", "image/jpeg", "application/dicom"


@dataclass(frozen=True)
class Req:
    """One request: sent with httpx, or as ``raw`` bytes on a socket when given."""

    body: bytes = b""
    content_type: str | None = PNG  # None = no Content-Type header
    path: str = "/v1/report"
    method: str = "POST"
    params: tuple[tuple[str, str], ...] = CHEAP
    headers: tuple[tuple[str, str], ...] = ()
    raw: bytes | None = None  # a whole HTTP request (headers + body) for a raw socket
    stream_mib: int = 0  # raw only: then stream this many MiB of body in 1 MiB writes


@dataclass(frozen=True)
class Case:
    kind: str  # the family of the input, e.g. "truncated-png"
    name: str  # this instance, e.g. "cut at 50%"
    make: Callable[[], Req]


def _case(kind: str, name: str, body: Callable[[], bytes], ctype: str | None = PNG) -> Case:
    return Case(kind, name, lambda: Req(body(), ctype))


@cache
def base_png() -> bytes:
    return im.png(im.synthetic(256))


@cache
def base_jpeg() -> bytes:
    return im.jpeg(im.synthetic(256))


@cache
def base_dicom() -> bytes:
    return im.dicom((im.synthetic(256).astype(np.uint16) * 16), {"BitsStored": 12, "HighBit": 11})


def _dcm(attrs: dict[str, object], bits16: bool = True) -> Callable[[], bytes]:
    arr = im.synthetic(128)
    return lambda: im.dicom(arr.astype(np.uint16) * 16 if bits16 else arr, attrs)


def pydicom_files() -> list[tuple[str, Path]]:
    """(kind, path) of every file of ``pydicom.data.get_testdata_files()`` and of the
    ``pydicom-data`` package (``data_store/data``), deduplicated."""
    from pydicom.data import get_testdata_files

    found: dict[Path, str] = {}
    try:
        import data_store  # the pydicom-data package

        store = Path(data_store.__file__).parent / "data"
        found |= {p.resolve(): "pydicom-data-package" for p in store.iterdir() if p.is_file()}
    except ImportError:
        pass
    for f in get_testdata_files():
        p = Path(f).resolve()
        if not p.is_file():  # the DICOMDIR tests list folders too
            continue
        kind = "pydicom-testfile-dcm" if p.suffix.lower() == ".dcm" else "pydicom-testfile-other"
        found.setdefault(p, kind)
    return sorted(((k, p) for p, k in found.items()), key=lambda kp: (kp[0], kp[1].name))


def _file_req(path: Path) -> Req:
    return Req(path.read_bytes(), DCM)


def pydicom_cases() -> Iterator[Case]:
    for kind, path in pydicom_files():
        yield Case(kind, path.name, partial(_file_req, path))


def truncated() -> Iterator[Case]:
    for kind, base, ctype, cuts in (
        ("truncated-png", base_png, PNG, (8, 16, 33, 0.25, 0.5, 0.9, -12, -1)),
        ("truncated-jpeg", base_jpeg, JPEG, (2, 3, 20, 0.25, 0.5, 0.9, -2)),
        ("truncated-dicom", base_dicom, DCM, (128, 132, 200, 0.25, 0.5, 0.9, -1)),
    ):
        for keep in cuts:
            yield _case(kind, f"cut at {keep}", partial(_cut, base, keep), ctype)


def _cut(base: Callable[[], bytes], keep: float | int) -> bytes:
    """``base()`` cut to ``keep`` bytes (negative: from the end) or to a fraction ``keep``."""
    data = base()
    return data[:keep] if isinstance(keep, int) else im.cut(data, keep)


def empty_and_random() -> Iterator[Case]:
    for ctype in (PNG, JPEG, DCM, "application/octet-stream"):
        yield _case("empty-body", f"0 bytes as {ctype}", lambda: b"", ctype)
    types: tuple[str | None, ...] = (PNG, JPEG, DCM, "application/octet-stream", None)
    for i, size in enumerate((1, 7, 132, 4096, 65536, 1 << 20)):
        declared = types[i % len(types)]
        yield _case("random-bytes", f"{size} B as {declared}", partial(_noise, size), declared)
    for magic, ctype in (
        (im.PNG_SIG, PNG),
        (b"\xff\xd8\xff\xe0", JPEG),
        (bytes(128) + b"DICM", DCM),
    ):
        yield _case("magic-then-garbage", ctype, partial(_garbage_after, magic), ctype)


def _garbage_after(magic: bytes) -> bytes:
    return magic + _noise(5000)


def _noise(n: int) -> bytes:
    return random.Random(n).randbytes(n)


def content_types() -> Iterator[Case]:
    pairs = (
        (base_png, JPEG),
        (base_png, DCM),
        (base_jpeg, PNG),
        (base_dicom, PNG),
        (base_png, "text/plain"),
        (base_png, "image/gif"),
        (base_png, "application/json"),
        (base_png, None),
        (base_png, "image/png; charset=utf-8"),
        (base_png, "image/png, image/jpeg"),
        (base_png, "image/" + "x" * 3000),
        (base_jpeg, "image/jpg"),
    )
    for body, ctype in pairs:
        yield _case("wrong-content-type", f"{body.__name__} as {str(ctype)[:40]}", body, ctype)
    arr = im.synthetic(96)
    for fmt in ("GIF", "BMP", "TIFF", "WEBP", "ICO", "PPM"):
        yield _case("other-image-format", fmt, partial(im.pillow_as, arr, fmt), "image/png")


def lying_headers() -> Iterator[Case]:
    for w, h in ((60000, 60000), (65535, 1), (1, 65535), (2**31 - 1, 2**31 - 1), (0, 0)):
        yield _case("png-huge-ihdr", f"IHDR {w}x{h}", partial(im.png_declaring, w, h))
    for w, h in ((65000, 65000), (60000, 60000), (0, 0), (1, 65000)):
        yield _case(
            "jpeg-huge-sof",
            f"SOF {w}x{h}",
            partial(_jpeg_sof, w, h),
            JPEG,
        )
    yield _case("decompression-bomb", "PNG 16384x16384 zeros", lambda: im.png_bomb(16384))
    yield _case("decompression-bomb", "PNG 7100x7100 zeros (just over)", lambda: im.png_bomb(7100))
    yield _case("decompression-bomb", "PNG 7000x7000 zeros (legal)", lambda: im.png_bomb(7000))
    yield _case(
        "decompression-bomb",
        "zTXt 64 MiB",
        lambda: im.png_with_chunk(base_png(), b"zTXt", im.text_bomb(64)),
    )
    yield _case(
        "decompression-bomb",
        "iCCP 64 MiB",
        lambda: im.png_with_chunk(base_png(), b"iCCP", im.text_bomb(64)),
    )


def _jpeg_sof(width: int, height: int) -> bytes:
    return im.jpeg_declaring(base_jpeg(), width, height)


def _named(*pairs: tuple[str, dict[str, object]]) -> tuple[tuple[str, dict[str, object]], ...]:
    """The (name, DICOM attributes) pairs as given (typed for the loops below)."""
    return pairs


def dicom_values() -> Iterator[Case]:
    nan = float("nan")
    for name, attrs in _named(
        ("WindowCenter NaN", {"WindowCenter": "NaN", "WindowWidth": 400}),
        ("WindowWidth NaN", {"WindowCenter": 40, "WindowWidth": nan}),
        ("WindowWidth inf", {"WindowCenter": 40, "WindowWidth": "inf"}),
        ("WindowWidth 0", {"WindowCenter": 40, "WindowWidth": 0}),
        ("WindowWidth negative", {"WindowCenter": 40, "WindowWidth": -5}),
        ("Window multi NaN", {"WindowCenter": ["NaN", "1"], "WindowWidth": ["NaN", "2"]}),
    ):
        yield _case("dicom-nan-window", name, _dcm(attrs), DCM)
    for name, attrs in _named(
        ("RescaleSlope NaN", {"RescaleSlope": "NaN", "RescaleIntercept": 0}),
        ("RescaleIntercept inf", {"RescaleSlope": 1, "RescaleIntercept": "inf"}),
        ("RescaleSlope 1e308 (overflow)", {"RescaleSlope": "1e308", "RescaleIntercept": 0}),
        ("RescaleSlope 0", {"RescaleSlope": 0, "RescaleIntercept": 0}),
    ):
        yield _case("dicom-nan-rescale", name, _dcm(attrs), DCM)
    text = _dcm({"RescaleSlope": "9.87654", "RescaleIntercept": 0})  # DS padded to 8 bytes
    yield _case(
        "dicom-nan-rescale",
        "RescaleSlope text",
        lambda: text().replace(b"9.87654 ", b"abc     "),
        DCM,
    )
    for name, attrs in _named(
        ("Rows/Columns 60000", {"Rows": 60000, "Columns": 60000}),
        ("Rows 0", {"Rows": 0}),
        ("BitsAllocated 1", {"BitsAllocated": 1, "BitsStored": 1, "HighBit": 0}),
        ("BitsStored 17 of 16", {"BitsStored": 17, "HighBit": 16}),
        ("SamplesPerPixel 3 on grey data", {"SamplesPerPixel": 3}),
        ("PixelData empty", {"PixelData": b""}),
        ("PALETTE COLOR without LUT", {"PhotometricInterpretation": "PALETTE COLOR"}),
        ("MONOCHROME3", {"PhotometricInterpretation": "MONOCHROME3"}),
        ("unknown TransferSyntax", {}),
    ):
        yield _case("dicom-geometry-lies", name, _dcm(attrs) if attrs else _bad_syntax, DCM)


def _bad_syntax() -> bytes:
    data = base_dicom()
    return data.replace(b"1.2.840.10008.1.2.1\0", b"1.2.840.99999.1.2.1\0", 1)
