"""NaN / infinity in DICOM numbers: refused as undecodable (422), never passed to the model."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from service.imaging.decode import decode_image
from service.imaging.dicom import decode_dicom
from service.imaging.dicom_render import window_to_unit
from service.imaging.errors import UndecodableImage
from service.imaging.preprocess import to_model_input
from service.imaging.types import DecodeLimits

LIMITS = DecodeLimits()


def crafted_dicom(**attrs: object) -> bytes:
    """A tiny 64x64 12-bit MONOCHROME2 DX image, header attributes overridden by ``attrs``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "DX", 64, 64, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (np.arange(64 * 64, dtype=np.uint16) % 4096).tobytes()
    buf = io.BytesIO()
    with warnings.catch_warnings():  # pydicom warns about the invalid DS values we set
        warnings.simplefilter("ignore")
        for key, value in attrs.items():
            setattr(ds, key, value)
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


NON_FINITE = {
    "window centre NaN": {"WindowCenter": "NaN", "WindowWidth": "400"},
    "window width NaN": {"WindowCenter": "100", "WindowWidth": "nan"},
    "window centre inf": {"WindowCenter": "inf", "WindowWidth": "400"},
    "window width -inf": {"WindowCenter": "100", "WindowWidth": "-inf"},
    "first of two centres NaN": {"WindowCenter": ["nan", "100"], "WindowWidth": "400"},
    "slope NaN": {"RescaleSlope": "nan", "RescaleIntercept": "0"},
    "intercept inf": {"RescaleSlope": "1", "RescaleIntercept": "inf"},
    "slope overflows to inf": {"RescaleSlope": "1e308", "RescaleIntercept": "0"},
}


@pytest.mark.parametrize("attrs", NON_FINITE.values(), ids=NON_FINITE.keys())
def test_non_finite_header_numbers_are_undecodable(attrs: dict[str, object]) -> None:
    data = crafted_dicom(**attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UndecodableImage, match="NaN or inf"):
            decode_dicom(data, LIMITS)
        with pytest.raises(UndecodableImage):
            decode_image(data, "application/dicom", LIMITS)


def test_non_finite_stored_pixels_are_undecodable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stored values as a float decoder could return them (Float Pixel Data is refused)."""
    stored = np.full((64, 64), 100.0, np.float32)
    stored[3, 5] = np.nan
    monkeypatch.setattr("service.imaging.dicom._decode_pixels", lambda ds, facts: stored)
    with pytest.raises(UndecodableImage, match="pixel data holds NaN"):
        decode_dicom(crafted_dicom(), LIMITS)


def test_decode_image_never_returns_non_finite_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last guard, whatever a decoder returns."""
    good = decode_dicom(crafted_dicom(), LIMITS)
    bad = good.pixels.copy()
    bad[0, 0] = np.inf
    monkeypatch.setattr(
        "service.imaging.decode.decode_dicom", lambda data, limits: type(good)(bad, "dicom")
    )
    with pytest.raises(UndecodableImage, match="NaN or infinite"):
        decode_image(crafted_dicom(), None, LIMITS)


def test_finite_extremes_still_render_to_the_unit_range() -> None:
    """Huge but finite numbers: no overflow to NaN in min-max, a usable model input."""
    wide = crafted_dicom(RescaleSlope="1e300", RescaleIntercept="-1e308")
    pixels = decode_dicom(wide, LIMITS).pixels
    assert np.isfinite(pixels).all() and pixels.min() == 0.0 and pixels.max() == 1.0
    assert np.isfinite(to_model_input(pixels, 32, 0.5, 0.25)).all()
    out = decode_dicom(crafted_dicom(WindowCenter="2048", WindowWidth="4096"), LIMITS)
    assert out.warnings == () and 0.0 <= out.pixels.min() < out.pixels.max() <= 1.0


def test_invalid_but_finite_window_still_falls_back_to_min_max() -> None:
    out = decode_dicom(crafted_dicom(WindowCenter="100", WindowWidth="0.5"), LIMITS)
    assert any("min-max used" in w for w in out.warnings)
    with pytest.raises(ValueError, match="finite"):
        window_to_unit(np.zeros(3), float("nan"), 10.0, "LINEAR")
