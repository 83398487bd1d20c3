"""DICOM grayscale rendering: stored values -> Modality LUT -> VOI -> [0, 1], white = dense.

Stored values -> Modality LUT (LUT sequence or rescale slope / intercept) -> VOI (VOI LUT
sequence, else the first window centre / width, else min-max of the modality values) ->
MONOCHROME1 inverted. The result is float32 (H, W) in [0, 1].

Non-finite numbers are refused (:class:`UndecodableImage`, HTTP 422), never passed on: NaN or
infinity in the stored values, in the Rescale Slope / Intercept (or what they make of the
stored values, e.g. an overflow), or in the first Window Center / Width. A finite window the
VOI function does not allow (LINEAR width < 1...) still falls back to min-max with a warning.
"""

from __future__ import annotations

import math
import re

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut, apply_voi

from service.imaging.errors import UndecodableImage

_CS_UNSAFE = re.compile(r"[^A-Z0-9 _]")


def code_string(ds: Dataset, keyword: str) -> str | None:
    """A code-string attribute, upper-cased and reduced to [A-Z0-9 _], at most 16 chars."""
    try:
        value = ds.get(keyword)
    except Exception:
        return None
    if value is None:
        return None
    text = _CS_UNSAFE.sub("", str(value).strip().upper())[:16]
    return text or None


def window_to_unit(values: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """DICOM VOI window (PS3.3 C.11.2.1.2) mapped straight to [0, 1], float64.

    ``function`` is LINEAR (default), LINEAR_EXACT or SIGMOID. Raises ValueError for a width
    the function does not allow (< 1 for LINEAR, <= 0 otherwise) and for non-finite numbers.
    """
    if not (math.isfinite(center) and math.isfinite(width)):
        raise ValueError(f"window centre and width must be finite, got {center}, {width}")
    x = np.asarray(values, dtype=np.float64)
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"SIGMOID window width must be > 0, got {width}")
        with np.errstate(over="ignore"):  # exp overflow -> inf -> exactly 0, as it should
            return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"LINEAR_EXACT window width must be > 0, got {width}")
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        raise ValueError(f"LINEAR window width must be >= 1, got {width}")
    if width == 1:
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _min_max(values: np.ndarray) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return np.zeros_like(x)
    if math.isfinite(hi - lo):
        return (x - lo) / (hi - lo)
    # hi - lo overflows for finite values of opposite signs near the float limit: use halves
    return (x / 2 - lo / 2) / (hi / 2 - lo / 2)


def _first(value: object) -> float:
    """First number of a possibly multi-valued DS element."""
    if isinstance(value, str | bytes | int | float):
        return float(value)
    return float(list(value)[0])  # type: ignore[call-overload]


def _voi_lut_unit(modal: np.ndarray, ds: Dataset) -> np.ndarray:
    """First VOI LUT, its output scaled by the LUT's own range (robust to descriptor bits)."""
    values = np.rint(modal).astype(np.int64) if modal.dtype.kind == "f" else modal
    out = apply_voi(values, ds, index=0).astype(np.float64)
    domain = apply_voi(np.arange(-32768, 65536, dtype=np.int64), ds, index=0)
    lo, hi = float(domain.min()), float(domain.max())
    return np.zeros_like(out) if hi <= lo else (out - lo) / (hi - lo)


def _window(ds: Dataset) -> tuple[float, float] | None:
    """First (centre, width), None when unreadable; UndecodableImage when NaN or infinite."""
    try:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
    except (ValueError, TypeError, IndexError):
        return None
    if not (math.isfinite(center) and math.isfinite(width)):
        raise UndecodableImage("DICOM Window Center / Width is not a finite number (NaN or inf)")
    return center, width


def _voi_unit(modal: np.ndarray, ds: Dataset) -> tuple[np.ndarray, list[str]]:
    """VOI stage: LUT sequence, else first window, else min-max; plus warnings."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        return _voi_lut_unit(modal, ds), []
    if "WindowCenter" in ds and "WindowWidth" in ds:
        window = _window(ds)
        function = (code_string(ds, "VOILUTFunction") or "LINEAR").replace(" ", "_")
        try:
            if window is not None:
                return window_to_unit(modal, *window, function), []
        except (ValueError, TypeError):
            pass
        return _min_max(modal), ["invalid VOI window in the header; min-max used"]
    return _min_max(modal), []


def _modality(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Modality LUT / rescale output; UndecodableImage when it (or its input) is not finite."""
    if stored.dtype.kind in "fc" and not np.isfinite(stored).all():
        raise UndecodableImage("DICOM pixel data holds NaN or infinite values")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            modal = np.asarray(apply_modality_lut(stored, ds))
    except Exception as exc:
        raise UndecodableImage(f"invalid Modality LUT / rescale ({type(exc).__name__})") from None
    if modal.dtype.kind in "fc" and not np.isfinite(modal).all():
        raise UndecodableImage(
            "DICOM Rescale Slope / Intercept or Modality LUT give NaN or infinite values"
        )
    return modal


def render(stored: np.ndarray, ds: Dataset) -> tuple[np.ndarray, list[str]]:
    """Stored values -> float32 (H, W) in [0, 1], white = dense; plus rendering warnings."""
    modal = _modality(stored, ds)
    unit, warnings = _voi_unit(modal, ds)
    if code_string(ds, "PhotometricInterpretation") == "MONOCHROME1":
        unit = 1.0 - unit
    if not np.isfinite(unit).all():  # belt and braces: nothing non-finite leaves the decoder
        raise UndecodableImage("DICOM rendering gives NaN or infinite values")
    if float(modal.max()) <= float(modal.min()):
        warnings.append("image is uniform (all pixels have the same value)")
    return unit.astype(np.float32), warnings
