"""Image size from the header of an encapsulated DICOM frame, read before any pixel is decoded.

The pixel decoders trust the codestream, not the DICOM header: a dataset saying 64x64 whose
JPEG 2000 codestream says 12000x12000 makes the decoder allocate the codestream's size. So the
frame header is parsed here and compared with Rows / Columns first:

- JPEG 2000 / HTJ2K codestream: SOC (FF4F) then SIZ (FF51): width = Xsiz - XOsiz, height =
  Ysiz - YOsiz, Csiz components, Ssiz bit depth; the COD segment's wavelet levels (used for
  reduced-resolution decoding, ``reduced.py``);
- JP2 file form: the boxes are walked to the contiguous codestream box ``jp2c``;
- JPEG (ITU T.81, lossless too) and JPEG-LS (T.87): the markers are walked to the first SOFn
  (FFC0-FFCF except DHT FFC4, JPG FFC8, DAC FFCC) or SOF55 (FFF7): P (bit depth), Y (height),
  X, Nf.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.encaps import generate_fragmented_frames

J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
JPEG_SOI = b"\xff\xd8"
HEAD_BYTES = 64 * 1024  # frame headers sit in the first bytes; more is never read
_SOF = frozenset({*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}) | {0xF7}
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field


@dataclass(frozen=True)
class FrameHeader:
    """What the compressed frame itself says it holds."""

    kind: str  # "JPEG 2000", "JPEG" or "JPEG-LS"
    rows: int
    columns: int
    components: int
    bits: int = 0  # sample precision of the first component (0 = not in the header bytes)
    levels: int | None = None  # JPEG 2000: wavelet decomposition levels (COD); None = unknown


def first_frame_head(pixel_data: bytes, limit: int = HEAD_BYTES) -> bytes:
    """The first ``limit`` bytes of the first frame of encapsulated Pixel Data."""
    out = bytearray()
    for fragment in next(generate_fragmented_frames(pixel_data, number_of_frames=1), ()):
        out += fragment[: limit - len(out)]
        if len(out) >= limit:
            break
    return bytes(out)


def frame_header(head: bytes) -> FrameHeader | None:
    """The header of a J2K / JP2 / JPEG / JPEG-LS frame; None when no known form starts it.

    Raises ValueError for a frame of a known form whose header is truncated or lacks the size.
    """
    if head.startswith(J2K_SOC_SIZ):
        return _siz(head)
    if head.startswith(JP2_SIGNATURE):
        return _siz(_jp2_codestream(head))
    if head.startswith(JPEG_SOI):
        return _sof(head)
    return None


def _siz(cs: bytes) -> FrameHeader:
    """SIZ marker segment: Lsiz Rsiz Xsiz Ysiz XOsiz YOsiz XTsiz YTsiz XTOsiz YTOsiz Csiz."""
    if not cs.startswith(J2K_SOC_SIZ) or len(cs) < 4 + 38:
        raise ValueError("JPEG 2000 codestream without a complete SIZ header")
    _, _, xsiz, ysiz, xo, yo, *_, csiz = struct.unpack(">HHIIIIIIIIH", cs[4:42])
    if xo >= xsiz or yo >= ysiz:
        raise ValueError("JPEG 2000 SIZ header gives an empty image")
    bits = (cs[42] & 0x7F) + 1 if len(cs) > 42 else 0  # Ssiz: depth - 1, top bit = signed
    return FrameHeader("JPEG 2000", ysiz - yo, xsiz - xo, csiz, bits, _cod_levels(cs))


def _cod_levels(cs: bytes) -> int | None:
    """Wavelet decomposition levels of the main header's COD segment (Lcod Scod SGcod(4)
    SPcod: levels first), or None when it is not in ``cs``."""
    pos = 2
    while pos + 4 <= len(cs):
        marker, length = struct.unpack(">HH", cs[pos : pos + 4])
        if marker == 0xFF52:
            return cs[pos + 9] if pos + 10 <= len(cs) else None
        if marker == 0xFF90 or length < 2:  # SOT: the main header ended without a COD
            return None
        pos += 2 + length
    return None


def _jp2_codestream(data: bytes) -> bytes:
    """Payload of the first ``jp2c`` box of a JP2 file (walking the top-level boxes)."""
    pos = 0
    while pos + 8 <= len(data):
        length, box = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if length == 1:  # 64-bit XLBox follows
            if pos + 16 > len(data):
                break
            length, header = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], 16
        if box == b"jp2c":
            return data[pos + header :]
        if length == 0 or length < header:  # 0 = to the end of the file: no jp2c after it
            break
        pos += length
    raise ValueError("JP2 file without a codestream box in its header bytes")


def _sof(data: bytes) -> FrameHeader:
    """First SOFn / SOF55 segment of a JPEG or JPEG-LS stream: P Y X Nf."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("JPEG stream: marker expected")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or SOS before any frame header
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _SOF:
            if length < 8 or pos + 10 > len(data):
                break
            p, y, x, nf = struct.unpack(">BHHB", data[pos + 4 : pos + 10])
            return FrameHeader("JPEG-LS" if marker == 0xF7 else "JPEG", y, x, nf, p)
        pos += 2 + length
    raise ValueError("JPEG stream without a frame header (SOF) in its header bytes")
