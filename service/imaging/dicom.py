"""DICOM bytes -> :class:`DecodedImage` with pydicom 3 and the permissive decoder plugins.

Rendering follows the DICOM grayscale pipeline (:mod:`service.imaging.dicom_render`): stored
values -> Modality LUT -> VOI -> MONOCHROME1 inverted, float32 (H, W) in [0, 1], white = dense;
NaN or infinity anywhere on the way is :class:`UndecodableImage`.

Decisions:
- colour objects (RGB, YBR_*, PALETTE COLOR) are refused (:class:`InvalidImage`): a radiograph is
  never colour, and the grey conversion of a secondary capture would be a guess;
- an object without Pixel Data is :class:`UndecodableImage` when the bytes hold a Pixel Data tag
  that the parser could not reach (truncated file), else :class:`InvalidImage` (SR, presentation
  state, RT plan... not an image);
- PHI safety: only the attributes of :class:`DicomFacts` and the pixel module are read for
  the image; the few study attributes a DICOM SR output needs go, unread by anything else, into
  :class:`DicomStudyRef` (``service.imaging.dicom_study``); errors are raised ``from None``
  with our own messages so no parser text (which may quote element values) reaches responses
  or logs.
"""

from __future__ import annotations

from io import BytesIO

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000TransferSyntaxes,
    JPEGExtended12Bit,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
)

from service.imaging.codestream import first_frame_head, frame_header
from service.imaging.dicom_codes import BODY_PARTS, MODALITIES, PHOTOMETRIC, VIEW_POSITIONS, known
from service.imaging.dicom_render import code_string as _text
from service.imaging.dicom_render import render
from service.imaging.dicom_study import study_ref
from service.imaging.errors import (
    ImageTooLarge,
    InvalidImage,
    UndecodableImage,
    UnsupportedMediaType,
)
from service.imaging.reduced import decode_reduced_j2k
from service.imaging.types import DecodedImage, DecodeLimits, DicomFacts
from service.imaging.working import reduce_factor, shrink_pixels

RADIOGRAPH_MODALITIES = frozenset({"CR", "DX", "DR"})  # no warning for these (or for none)
GREY_PHOTOMETRIC = frozenset({"MONOCHROME1", "MONOCHROME2"})
# (7FE0,0010) Pixel Data tag as it appears in little- and big-endian encodings
_PIXEL_DATA_TAGS = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")
# first group of a dataset written without preamble: file meta (0002) or identifying (0008)
_DATASET_STARTS = (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")
# compressed syntaxes whose frame header gives its own size (checked before decoding)
_SIZED_SYNTAXES = frozenset(
    {*JPEG2000TransferSyntaxes, *JPEGTransferSyntaxes, *JPEGLSTransferSyntaxes}
)


def looks_like_dicom(data: bytes) -> bool:
    """True for a Part 10 file ('DICM' at 128 or at 0) or a preamble-less dataset pydicom reads."""
    if data[128:132] == b"DICM" or data[:4] == b"DICM":
        return True
    return _read_bare_dataset(data, stop_before_pixels=True) is not None


def read_dataset(data: bytes) -> Dataset:
    """Parse DICOM bytes (``force=False`` first, then a preamble-less dataset)."""
    if data[:4] == b"DICM":  # preamble stripped, prefix kept
        data = bytes(128) + data
    try:
        ds: Dataset = dcmread(BytesIO(data), force=False)
    except InvalidDicomError:
        bare = _read_bare_dataset(data, stop_before_pixels=False)
        if bare is None:
            raise UndecodableImage("not a DICOM file: no 'DICM' prefix and no dataset") from None
        ds = bare
    except Exception as exc:
        raise UndecodableImage(f"DICOM header cannot be parsed ({type(exc).__name__})") from None
    _ensure_transfer_syntax(ds)
    return ds


def _read_bare_dataset(data: bytes, stop_before_pixels: bool) -> Dataset | None:
    """A dataset without preamble/meta, or None when the bytes do not parse as one."""
    if len(data) < 8 or data[:2] not in _DATASET_STARTS:
        return None
    try:
        ds = dcmread(BytesIO(data), force=True, stop_before_pixels=stop_before_pixels)
        plausible = "SOPClassUID" in ds or ("Rows" in ds and "Columns" in ds)
    except Exception:
        return None
    return ds if plausible else None


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Fill a missing Transfer Syntax UID from the encoding the parser actually used."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    if implicit:
        uid = ImplicitVRLittleEndian
    else:
        uid = ExplicitVRLittleEndian if little in (True, None) else ExplicitVRBigEndian
    if meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value is None or value == "" else int(value)
    except Exception:
        return None


def _transfer_syntax(ds: Dataset) -> UID:
    return UID(str(ds.file_meta.TransferSyntaxUID))


def _facts(ds: Dataset) -> DicomFacts:
    """Non-identifying rendering attributes (never PatientName, dates, institution...).

    Code strings are kept only when they are known codes (else "unrecognised"): they are
    echoed in responses and warnings, and the file may hold any text there.
    """
    return DicomFacts(
        modality=known(_text(ds, "Modality"), MODALITIES),
        body_part=known(_text(ds, "BodyPartExamined"), BODY_PARTS),
        view_position=known(_text(ds, "ViewPosition"), VIEW_POSITIONS),
        photometric_interpretation=known(_text(ds, "PhotometricInterpretation"), PHOTOMETRIC) or "",
        bits_stored=_int(ds, "BitsStored") or 0,
        transfer_syntax=_transfer_syntax(ds).name,
        rows=_int(ds, "Rows") or 0,
        columns=_int(ds, "Columns") or 0,
    )


def _check_has_pixels(ds: Dataset, data: bytes) -> None:
    if "PixelData" in ds:
        return
    if any(tag in data for tag in _PIXEL_DATA_TAGS):
        raise UndecodableImage("DICOM pixel data is truncated or unreadable")
    try:
        sop = UID(str(ds.SOPClassUID)).name if "SOPClassUID" in ds else "unknown SOP class"
    except Exception:
        sop = "unknown SOP class"
    raise InvalidImage(f"DICOM object has no pixel data ({sop}): not an image")


def _check_geometry(ds: Dataset, facts: DicomFacts, limits: DecodeLimits) -> None:
    """Frames, colour and size, all from the header (before any pixel is decoded)."""
    frames = _int(ds, "NumberOfFrames") or 1
    if frames > 1:
        raise InvalidImage(f"multi-frame DICOM ({frames} frames): send a single radiograph")
    samples = _int(ds, "SamplesPerPixel") or 1
    pi = facts.photometric_interpretation
    if samples != 1 or pi not in GREY_PHOTOMETRIC:
        raise InvalidImage(
            f"colour or unknown DICOM photometric interpretation '{pi or 'missing'}' "
            f"({samples} samples/pixel): only MONOCHROME1/MONOCHROME2 radiographs are accepted"
        )
    rows, cols = facts.rows, facts.columns
    if rows * cols > limits.max_pixels:
        raise ImageTooLarge(
            f"DICOM image is {cols}x{rows} = {rows * cols} pixels, over {limits.max_pixels}"
        )
    if min(rows, cols) < limits.min_side:
        raise InvalidImage(f"DICOM image is {cols}x{rows}: sides under {limits.min_side} px")


def _check_frame_header(ds: Dataset, facts: DicomFacts, limits: DecodeLimits) -> None:
    """The compressed frame's own header must give the header's size (decoders trust it)."""
    if _transfer_syntax(ds) not in _SIZED_SYNTAXES:
        return
    try:
        head = frame_header(first_frame_head(ds.PixelData))
    except Exception:
        head = None
    if head is None:
        raise UndecodableImage(
            f"the {facts.transfer_syntax} pixel data has no readable frame header"
        ) from None
    if (head.rows, head.columns, head.components) == (facts.rows, facts.columns, 1):
        return
    over = head.rows * head.columns > limits.max_pixels
    raise UndecodableImage(
        f"the {head.kind} frame header says {head.columns}x{head.rows} with "
        f"{head.components} component(s){f', over {limits.max_pixels} pixels' if over else ''}"
        f"; the DICOM header says {facts.columns}x{facts.rows} with 1: refused before decoding"
    )


def _check_decoder(ds: Dataset, facts: DicomFacts) -> None:
    """UnsupportedMediaType when no installed plugin decodes this transfer syntax."""
    uid = _transfer_syntax(ds)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise UnsupportedMediaType(
            f"DICOM transfer syntax '{uid.name}' has no pixel decoder in this service"
        ) from None
    if not decoder.is_available:
        raise UnsupportedMediaType(
            f"DICOM transfer syntax '{uid.name}' needs a decoder plugin that is not installed"
        )
    if uid == JPEGExtended12Bit and facts.bits_stored > 8:
        if "pylibjpeg" not in decoder.available_plugins:
            raise UnsupportedMediaType(
                "12-bit JPEG Extended (Process 2 and 4) DICOM needs the GPLv3 decoder "
                "pylibjpeg-libjpeg, not installed here (opt-in extra 'gpl-jpeg'); "
                "send the image uncompressed, JPEG 2000 or JPEG lossless"
            )


def _decode_pixels(ds: Dataset, facts: DicomFacts) -> np.ndarray:
    """Stored values (H, W), native dtype."""
    try:
        arr = np.asarray(ds.pixel_array)
    except NotImplementedError:
        raise UnsupportedMediaType(
            f"DICOM transfer syntax '{facts.transfer_syntax}' has no pixel decoder"
        ) from None
    except Exception as exc:
        unsupported = isinstance(exc, RuntimeError) and "does not support" in str(exc)
        if unsupported:
            raise UnsupportedMediaType(
                f"no installed plugin decodes this '{facts.transfer_syntax}' pixel data"
            ) from None
        raise UndecodableImage(
            f"DICOM pixel data ({facts.transfer_syntax}) cannot be decoded "
            f"({type(exc).__name__}): truncated or corrupt"
        ) from None
    if arr.shape != (facts.rows, facts.columns):
        raise InvalidImage(f"decoded pixel array has shape {arr.shape}, expected one 2-D frame")
    return arr


def _content_warnings(facts: DicomFacts) -> list[str]:
    """Accepted-but-suspicious content: not a radiograph, or not a chest."""
    out: list[str] = []
    if facts.modality is not None and facts.modality not in RADIOGRAPH_MODALITIES:
        out.append(f"Modality {facts.modality} is not a radiograph (CR/DX/DR expected)")
    if facts.body_part is not None and facts.body_part != "CHEST":
        out.append(f"BodyPartExamined is {facts.body_part}, not CHEST")
    return out


def decode_dicom(data: bytes, limits: DecodeLimits) -> DecodedImage:
    """Decode one single-frame grey DICOM image to float32 (H, W) in [0, 1], white = dense.

    Raises:
        UnsupportedMediaType: transfer syntax without an installed decoder.
        UndecodableImage: not parseable, truncated or corrupt pixel data.
        InvalidImage: no pixel data, multi-frame, colour, sides under ``limits.min_side``.
        ImageTooLarge: Rows * Columns over ``limits.max_pixels`` (checked before decoding).
        UndecodableImage: also a JPEG / JPEG-LS / JPEG 2000 frame whose own header disagrees
            with Rows / Columns (the decoders would allocate the frame's size).
    """
    ds = read_dataset(data)
    _check_has_pixels(ds, data)
    facts = _facts(ds)
    _check_geometry(ds, facts, limits)
    _check_frame_header(ds, facts, limits)
    _check_decoder(ds, facts)
    reduced = decode_reduced_j2k(ds, facts, limits)
    stored = _decode_pixels(ds, facts) if reduced is None else reduced
    factor = reduce_factor(int(stored.shape[0]), int(stored.shape[1]), limits.max_side)
    pixels, render_warnings = render(stored, ds, factor)
    warnings = (*_content_warnings(facts), *render_warnings)
    return DecodedImage(
        pixels=shrink_pixels(pixels, limits.max_side),
        source="dicom",
        dicom=facts,
        warnings=warnings,
        original_hw=(facts.rows, facts.columns),
        study=study_ref(ds),
    )
