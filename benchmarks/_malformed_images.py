"""Byte-level makers of the reliability benchmark's inputs: images, broken images, bodies.

Pure functions, no I/O: each returns the bytes of one PNG, JPEG, DICOM or multipart body, valid
or crafted to be broken (truncated, lying headers, bombs, NaN attributes...).
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

PNG_SIG = b"\x89PNG\r\n\x1a\n"
BOUNDARY = "cxr-reliability-boundary"


def synthetic(side: int, seed: int = 0, width: int | None = None) -> np.ndarray:
    """A ``side`` x ``width`` (default square) uint8 grey image: radial gradient + noise."""
    w = width or side
    yy, xx = np.mgrid[0:side, 0:w].astype(np.float32)
    r = np.hypot((yy - side / 2) / max(side, 1), (xx - w / 2) / max(w, 1))
    noise = np.random.default_rng(seed).normal(0.0, 12.0, (side, w))
    out: np.ndarray = np.clip(200.0 - 300.0 * r + noise, 0, 255).astype(np.uint8)
    return out


def png(arr: np.ndarray, mode: str | None = None, **save: Any) -> bytes:
    """``arr`` (H, W) or (H, W, C) encoded as PNG by Pillow (``mode`` e.g. ``"I;16"``)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, "PNG", **save)
    return buf.getvalue()


def jpeg(arr: np.ndarray, **save: Any) -> bytes:
    """``arr`` encoded as JPEG by Pillow (``quality`` 90 unless given)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", **{"quality": 90, **save})
    return buf.getvalue()


def pillow_as(arr: np.ndarray, fmt: str) -> bytes:
    """``arr`` in another Pillow format (GIF, BMP, TIFF, WEBP...)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int, idat: bytes = b"") -> bytes:
    """A grey 8-bit PNG whose IHDR says ``width`` x ``height`` but whose IDAT is ``idat``
    (default: one zero row, compressed): a huge declared size from a few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = idat or zlib.compress(b"\0" * (min(width, 4096) + 1))
    return PNG_SIG + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def png_bomb(side: int) -> bytes:
    """A real ``side`` x ``side`` all-zero grey PNG (inflates to ``side**2`` bytes); the zlib
    stream is built row block by row block, so the raw image is never held."""
    comp, row = zlib.compressobj(9), b"\0" * (side + 1)
    block = row * 256
    parts = [comp.compress(block) for _ in range(side // 256)]
    parts += [comp.compress(row * (side % 256)), comp.flush()]
    return png_declaring(side, side, b"".join(parts))


def png_with_chunk(base: bytes, kind: bytes, data: bytes) -> bytes:
    """``base`` PNG with one extra chunk inserted right after IHDR."""
    at = 8 + 8 + 13 + 4  # signature + IHDR chunk
    return base[:at] + chunk(kind, data) + base[at:]


def text_bomb(mib: int) -> bytes:
    """zTXt payload: keyword ``Comment`` and ``mib`` MiB of zeros, compressed (~1000:1)."""
    return b"Comment\0\0" + zlib.compress(b"\0" * (mib << 20), 9)


def patch(data: bytes, marker: bytes, offset: int, fmt: str, *values: int) -> bytes:
    """``values`` packed with ``fmt`` at ``offset`` after the first ``marker`` in ``data``."""
    at = data.index(marker) + offset
    packed = struct.pack(fmt, *values)
    return data[:at] + packed + data[at + len(packed) :]


def jpeg_declaring(base: bytes, width: int, height: int) -> bytes:
    """``base`` baseline JPEG with its SOF0 frame size set to ``width`` x ``height``."""
    return patch(base, b"\xff\xc0", 5, ">HH", height, width)


def cut(data: bytes, keep: float | int) -> bytes:
    """The first ``keep`` bytes (int) or fraction (float) of ``data``."""
    n = keep if isinstance(keep, int) else int(len(data) * keep)
    return data[:n]


def dicom(
    pixels: np.ndarray, attrs: Mapping[str, Any] | None = None, photometric: str = "MONOCHROME2"
) -> bytes:
    """An uncompressed Explicit VR Little Endian DX DICOM of ``pixels`` (uint8 / uint16,
    (H, W), (H, W, 3) or (frames, H, W)); ``attrs`` set last (may be invalid on purpose)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.1.1")  # DX for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality, ds.BodyPartExamined, ds.PatientName = "DX", "CHEST", "Reliability^Bench"
    colour = pixels.ndim == 3 and pixels.shape[-1] == 3
    frames = pixels.ndim == 3 and not colour
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    if frames:
        ds.NumberOfFrames = pixels.shape[0]
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PhotometricInterpretation = "RGB" if colour else photometric
    ds.PixelData = pixels.tobytes()
    return _save(ds, attrs or {})


def _save(ds: Any, attrs: Mapping[str, Any]) -> bytes:
    """``ds`` with ``attrs`` set, as DICOM Part 10 bytes, pydicom's value checks off."""
    from pydicom import config

    old = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE  # NaN and other invalid values
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about each invalid value
            for key, value in attrs.items():
                setattr(ds, key, value)
            buf = io.BytesIO()
            ds.save_as(buf, enforce_file_format=True)
    finally:
        config.settings.writing_validation_mode = old
    return buf.getvalue()


def multipart(parts: Iterable[tuple[str, str | None, str | None, bytes]]) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data body built by hand, so that broken
    forms are possible; each part is (field name, filename or None, content type, bytes)."""
    out = bytearray()
    for name, filename, ctype, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n".encode()
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={BOUNDARY}"


def raw_http(
    method: str, target: str, headers: Mapping[str, str], body: bytes = b"", host: str = "x"
) -> bytes:
    """A request as bytes for a raw socket (no framing checks: headers are sent as given)."""
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: {host}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
