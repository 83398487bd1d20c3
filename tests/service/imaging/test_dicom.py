"""DICOM decoding on real files (pydicom / pydicom-data test files, ../shared/data/dicom)."""

from __future__ import annotations

import importlib.util
import io
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_windowing
from pydicom.uid import MPEG2MPML

from service.imaging.dicom import decode_dicom
from service.imaging.dicom_render import window_to_unit
from service.imaging.errors import (
    ImageError,
    ImageTooLarge,
    InvalidImage,
    UndecodableImage,
    UnsupportedMediaType,
)
from service.imaging.types import DecodedImage, DecodeLimits

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
LIMITS = DecodeLimits()


def _raw(name: str) -> bytes:
    return Path(get_testdata_file(name)).read_bytes()


def _shared(name: str) -> bytes:
    path = SHARED / "dicom" / name
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent")
    return path.read_bytes()


def _to_bytes(ds: pydicom.Dataset, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="module")
def rg1() -> dict[str, DecodedImage]:
    return {n: decode_dicom(_raw(f"RG1_{n}.dcm"), LIMITS) for n in ("UNCR", "J2KR")}


def test_j2k_lossless_decodes_to_the_uncompressed_pixels(rg1: dict[str, DecodedImage]) -> None:
    unc, j2k = rg1["UNCR"], rg1["J2KR"]
    assert j2k.pixels.shape == (1955, 1841) and j2k.pixels.dtype == np.float32
    assert np.array_equal(unc.pixels, j2k.pixels)
    assert j2k.dicom is not None and "JPEG 2000" in j2k.dicom.transfer_syntax
    assert j2k.dicom.photometric_interpretation == "MONOCHROME1" and j2k.dicom.bits_stored == 15
    assert j2k.warnings == ()  # CR chest: nothing to warn about


def test_rg1_window_and_mono1_inversion_match_pydicom(rg1: dict[str, DecodedImage]) -> None:
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    windowed = apply_windowing(ds.pixel_array.astype(np.float64), ds)  # in [0, 2**15 - 1]
    expected = 1.0 - windowed / (2**15 - 1)  # MONOCHROME1: low stored value = white
    np.testing.assert_allclose(rg1["UNCR"].pixels, expected, atol=1e-5)
    assert 0.0 <= rg1["UNCR"].pixels.min() and rg1["UNCR"].pixels.max() <= 1.0


def test_relabelled_mono1_renders_as_the_inverse_of_mono2() -> None:
    mono2 = decode_dicom(_shared("siim_cxr_jpeg_baseline_mono2.dcm"), LIMITS)
    mono1 = decode_dicom(_shared("siim_cxr_jpeg_baseline_relabelled_mono1.dcm"), LIMITS)
    assert mono2.pixels.shape == (1024, 1024)
    assert float(mono2.pixels.std()) > 0.1  # a real image, not a flat one
    np.testing.assert_allclose(mono1.pixels, 1.0 - mono2.pixels, atol=1e-6)


def test_shared_copies_decode_like_the_package_files() -> None:
    shared = decode_dicom(_shared("RG3_J2KR.dcm"), LIMITS)
    assert np.array_equal(shared.pixels, decode_dicom(_raw("RG3_J2KR.dcm"), LIMITS).pixels)


def test_extremity_decodes_with_a_body_part_warning() -> None:
    out = decode_dicom(_raw("RG3_J2KR.dcm"), LIMITS)
    assert out.pixels.shape == (1760, 1760)
    assert out.dicom is not None and out.dicom.body_part == "EXTREMITY"
    assert len(out.warnings) == 1 and "EXTREMITY" in out.warnings[0]


def test_voi_lut_sequence_is_applied() -> None:
    ds = pydicom.dcmread(get_testdata_file("vlut_04.dcm"))
    raw = ds.pixel_array.astype(np.int64)
    lut = np.asarray(ds.VOILUTSequence[0].LUTData, dtype=np.float64)  # linear in the file
    original = decode_dicom(_raw("vlut_04.dcm"), LIMITS).pixels
    np.testing.assert_allclose(original, lut[raw] / lut.max(), atol=1e-6)
    curve = np.rint(65535 * (np.arange(256) / 255.0) ** 3).astype(int)  # make it non-linear
    ds.VOILUTSequence[0].LUTData = curve.tolist()
    out = decode_dicom(_to_bytes(ds), LIMITS).pixels
    np.testing.assert_allclose(out, curve[raw] / 65535.0, atol=1e-6)
    naive = (raw - raw.min()) / (raw.max() - raw.min())
    assert np.abs(out - naive).max() > 0.2


def test_modality_lut_sequence_is_applied() -> None:
    ds = pydicom.dcmread(get_testdata_file("mlut_18.dcm"))
    raw = ds.pixel_array.astype(np.int64)
    first = int(ds.ModalityLUTSequence[0].LUTDescriptor[1])  # -2048
    n = int(ds.ModalityLUTSequence[0].LUTDescriptor[0])
    curve = np.rint(65535 * np.sqrt(np.arange(n) / (n - 1))).astype(int)
    ds.ModalityLUTSequence[0].LUTData = curve.tolist()
    out = decode_dicom(_to_bytes(ds), LIMITS).pixels
    mapped = curve[np.clip(raw - first, 0, n - 1)].astype(np.float64)
    expected = (mapped - mapped.min()) / (mapped.max() - mapped.min())  # no VOI: min-max
    np.testing.assert_allclose(out, expected, atol=1e-6)
    naive = (raw - raw.min()) / (raw.max() - raw.min())
    assert np.abs(out - naive).max() > 0.1


def test_rescale_intercept_is_applied_before_the_window() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # slope 1, intercept -1024
    ds.WindowCenter, ds.WindowWidth = [40, 500], [400, 2000]  # two windows: the first is used
    out = decode_dicom(_to_bytes(ds), LIMITS).pixels
    hu = ds.pixel_array.astype(np.float64) - 1024.0
    np.testing.assert_allclose(out, window_to_unit(hu, 40.0, 400.0, "LINEAR"), atol=1e-6)
    assert 0.05 < float(out.mean()) < 0.95  # a window in HU, not on the stored values


@pytest.mark.parametrize(
    "name",
    ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm"],
)
def test_compressed_and_big_endian_match_the_native_file(name: str) -> None:
    reference = decode_dicom(_raw("MR_small.dcm"), LIMITS)
    out = decode_dicom(_raw(name), LIMITS)
    assert np.array_equal(out.pixels, reference.pixels)
    assert any("Modality MR" in w for w in out.warnings)


@pytest.mark.parametrize("name", ["JPGLosslessP14SV1_1s_1f_8b.dcm", "JPEG-LL.dcm"])
def test_jpeg_lossless_decodes(name: str) -> None:
    ds = pydicom.dcmread(get_testdata_file(name))
    out = decode_dicom(_raw(name), LIMITS)
    assert out.pixels.shape == (ds.Rows, ds.Columns)
    assert out.pixels.min() >= 0 and out.pixels.max() <= 1 and out.pixels.std() > 0.01


def test_files_without_preamble_or_meta_decode() -> None:
    data = _raw("MR_small.dcm")
    reference = decode_dicom(data, LIMITS).pixels
    assert np.array_equal(decode_dicom(data[128:], LIMITS).pixels, reference)  # 'DICM' at 0
    assert np.array_equal(decode_dicom(data[132:], LIMITS).pixels, reference)  # meta at 0
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    del ds.file_meta
    ds.preamble = None
    bare = _to_bytes(ds, implicit_vr=True, little_endian=True)
    assert bare[:2] == b"\x08\x00"
    out = decode_dicom(bare, LIMITS)
    assert np.array_equal(out.pixels, reference)
    assert out.dicom is not None and out.dicom.transfer_syntax == "Implicit VR Little Endian"


def _without_pixel_data() -> bytes:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    del ds.PixelData
    return _to_bytes(ds)


@pytest.mark.filterwarnings("ignore:End of file reached")
@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("emri_small_jpeg_2k_lossless_too_short.dcm", UndecodableImage),
        ("MR_truncated.dcm", UndecodableImage),
        ("OT-PAL-8-face.dcm", InvalidImage),  # palette colour, also preamble-less
        ("US1_UNCR.dcm", InvalidImage),  # RGB
        ("emri_small_big_endian.dcm", InvalidImage),  # 10 frames
        ("test-SR.dcm", InvalidImage),  # structured report: no pixel data
    ],
)
def test_broken_or_unusable_files_raise(name: str, error: type[ImageError]) -> None:
    with pytest.raises(error) as info:
        decode_dicom(_raw(name), LIMITS)
    assert type(info.value) is error and info.value.detail


def test_deleted_pixel_data_and_random_bytes() -> None:
    with pytest.raises(InvalidImage, match="no pixel data"):
        decode_dicom(_without_pixel_data(), LIMITS)
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(UndecodableImage):
        decode_dicom(noise, LIMITS)


@pytest.mark.skipif(
    importlib.util.find_spec("libjpeg") is not None, reason="GPL pylibjpeg-libjpeg installed"
)
def test_12_bit_jpeg_extended_is_unsupported_without_the_gpl_plugin() -> None:
    with pytest.raises(UnsupportedMediaType, match="gpl-jpeg"):
        decode_dicom(_raw("JPGExtended.dcm"), LIMITS)


def test_transfer_syntax_without_decoder_is_unsupported() -> None:
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([bytes(64)])
    with pytest.raises(UnsupportedMediaType, match="MPEG2"):
        decode_dicom(_to_bytes(ds), LIMITS)


def test_limits_are_checked_before_decoding() -> None:
    # MR_truncated's pixel data is short: a decode attempt would raise UndecodableImage
    with pytest.raises(ImageTooLarge):
        decode_dicom(_raw("MR_truncated.dcm"), DecodeLimits(max_pixels=64 * 64 - 1))
    with pytest.raises(InvalidImage, match="sides under"):
        decode_dicom(_raw("MR_truncated.dcm"), DecodeLimits(min_side=65))


def test_window_to_unit_follows_the_standard() -> None:
    x = np.array([-1000.0, 49.5, 50.0, 100.0, 150.5, 1000.0])
    linear = window_to_unit(x, 100.0, 101.0, "LINEAR")  # c - 0.5 -/+ (w - 1) / 2 = 49.5, 149.5
    np.testing.assert_allclose(linear, [0.0, 0.0, 0.005, 0.505, 1.0, 1.0])
    np.testing.assert_allclose(window_to_unit(x, 100.0, 100.0, "LINEAR_EXACT")[2:4], [0, 0.5])
    assert window_to_unit(np.array([100.0]), 100.0, 10.0, "SIGMOID")[0] == pytest.approx(0.5)
    with pytest.raises(ValueError):
        window_to_unit(x, 0.0, 0.5, "LINEAR")


IDENTIFYING = (
    "PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "AccessionNumber",
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "StudyTime", "StudyID",
    "InstitutionName", "InstitutionAddress", "ReferringPhysicianName", "StationName",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
)  # fmt: skip


def test_no_identifying_value_reaches_results_errors_or_logs(
    caplog: pytest.LogCaptureFixture, recwarn: pytest.WarningsRecorder
) -> None:
    caplog.set_level(logging.DEBUG)
    files = [get_testdata_file(n) for n in ("RG3_J2KR.dcm", "vlut_04.dcm", "mlut_18.dcm",
             "CT_small.dcm", "OT-PAL-8-face.dcm", "emri_small_big_endian.dcm", "JPGExtended.dcm",
             "MR_truncated.dcm", "emri_small_jpeg_2k_lossless_too_short.dcm")]  # fmt: skip
    files += sorted((SHARED / "dicom").glob("siim_*.dcm"))
    secrets: set[str] = set()
    texts: list[str] = []
    for path in files:
        header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        secrets |= {str(header.get(k)) for k in IDENTIFYING if len(str(header.get(k, ""))) >= 4}
        try:
            out = decode_dicom(Path(path).read_bytes(), LIMITS)
            texts.append(repr(replace(out, pixels=np.zeros((1, 1), np.float32))))
        except ImageError as exc:
            texts += [str(exc), exc.detail, repr(exc)]
    texts += [caplog.text] + [str(w.message) for w in recwarn]
    assert len(secrets) > 20 and any("CR" in t for t in texts)  # the test sees real values
    blob = "\n".join(texts)
    leaked = sorted(s for s in secrets if s in blob)
    assert not leaked
