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
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut, apply_voi

from service.imaging.errors import UndecodableImage

_CS_UNSAFE = re.compile(r"[^A-Z0-9 _]")
STRIP_ROWS = 256  # rows rendered at once (float64 intermediates: 8 B x STRIP_ROWS x width)


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


def _min_max(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``values`` mapped to [0, 1] by the image's (not the strip's) range ``lo``..``hi``."""
    x = np.asarray(values, dtype=np.float64)
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


def _voi_unit(modal: np.ndarray, ds: Dataset, lo: float, hi: float) -> tuple[np.ndarray, list[str]]:
    """VOI stage: LUT sequence, else first window, else min-max (image range); warnings."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence) > 0:
        try:
            return _voi_lut_unit(modal, ds), []
        except Exception as exc:  # empty / short LUTData, a bad descriptor: pydicom raises
            raise UndecodableImage(  # TypeError, IndexError, struct.error...
                f"invalid VOI LUT Sequence ({type(exc).__name__}): LUT data and descriptor disagree"
            ) from None
    if "WindowCenter" in ds and "WindowWidth" in ds:
        window = _window(ds)
        function = (code_string(ds, "VOILUTFunction") or "LINEAR").replace(" ", "_")
        try:
            if window is not None:
                return window_to_unit(modal, *window, function), []
        except (ValueError, TypeError):
            pass
        return _min_max(modal, lo, hi), ["invalid VOI window in the header; min-max used"]
    return _min_max(modal, lo, hi), []


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


def _modal_range(stored: np.ndarray, ds: Dataset) -> tuple[float, float]:
    """Min and max of the modality values, one strip of rows at a time."""
    lo, hi = math.inf, -math.inf
    for r in range(0, stored.shape[0], STRIP_ROWS):
        modal = _modality(stored[r : r + STRIP_ROWS], ds)
        lo, hi = min(lo, float(modal.min())), max(hi, float(modal.max()))
    return lo, hi


def _render_strip(
    stored: np.ndarray, ds: Dataset, lo: float, hi: float
) -> tuple[np.ndarray, list[str]]:
    """Rows of stored values -> float32 rows in [0, 1], white = dense; plus warnings."""
    unit, warnings = _voi_unit(_modality(stored, ds), ds, lo, hi)
    if code_string(ds, "PhotometricInterpretation") == "MONOCHROME1":
        unit = 1.0 - unit
    if not np.isfinite(unit).all():  # belt and braces: nothing non-finite leaves the decoder
        raise UndecodableImage("DICOM rendering gives NaN or infinite values")
    return unit.astype(np.float32), warnings


def _reduce(unit: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each ``factor`` x ``factor`` block (partial blocks at the edges: their mean)."""
    if factor == 1:
        return unit
    return np.asarray(Image.fromarray(unit).reduce(factor), dtype=np.float32)


def render(stored: np.ndarray, ds: Dataset, factor: int = 1) -> tuple[np.ndarray, list[str]]:
    """Stored values -> float32 (H, W) in [0, 1], white = dense; plus rendering warnings.

    Rendered a strip of rows at a time (min-max uses the whole image's range), each strip
    reduced by ``factor`` (block means; strips are whole blocks, so this equals reducing the
    whole image): the peak is the stored values, one strip's float64 intermediates and the
    (reduced) float32 output.
    """
    if stored.ndim != 2 or stored.size == 0:
        raise UndecodableImage(f"DICOM pixel array has shape {stored.shape}, expected 2-D")
    lo, hi = _modal_range(stored, ds)
    h, w = stored.shape
    out = np.empty((-(-h // factor), -(-w // factor)), np.float32)
    step = factor * max(1, STRIP_ROWS // factor)
    warnings: list[str] = []
    for r in range(0, h, step):
        unit, strip_warnings = _render_strip(stored[r : r + step], ds, lo, hi)
        reduced = _reduce(unit, factor)
        out[r // factor : r // factor + reduced.shape[0]] = reduced
        warnings = warnings or strip_warnings  # the same for every strip
    if hi <= lo:
        warnings.append("image is uniform (all pixels have the same value)")
    return out, warnings
