"""Dataset readers returning ``Study`` records, and the training image loader.

A missing or malformed file always raises ``DataFormatError`` naming the file; nothing is
skipped silently. Readers: ``read_mimic`` (MIMIC-CXR-JPG + reports), ``read_iu_r2gen`` (IU
X-ray, R2Gen layout), ``read_image_folder`` (label sub-folders, e.g. Kermany) with
``held_out_split``. The raw IU XML reader lives in ``iu_xml``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from model_export.data.image_folder import (
    KERMANY_LABELS,
    held_out_split,
    read_image_folder,
    split_of,
)
from model_export.data.iu_r2gen import read_iu_r2gen
from model_export.data.mimic import parse_sections, read_mimic, report_parts
from model_export.data.records import DataFormatError

__all__ = [
    "KERMANY_LABELS",
    "DataFormatError",
    "held_out_split",
    "load_grey",
    "parse_sections",
    "read_image_folder",
    "read_iu_r2gen",
    "read_mimic",
    "report_parts",
    "split_of",
]

_FULL_SCALE = {"L": 255.0, "I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0}


def load_grey(path: Path, size: int) -> np.ndarray:
    """Image file -> (size, size) float32 in [0, 1], white = bright in the file.

    Colour images are converted to luma (Pillow 'L'); 8-bit values are divided by 255 and
    16-bit grey by 65535. The whole image is then squashed to a square with Pillow's 'F'-mode
    bilinear resize (aspect ratio not kept, no crop), exactly as the service's
    ``service.imaging.preprocess.to_model_input`` does, so training and serving see the same
    geometry.

    Raises:
        DataFormatError: the file is missing or not a readable image.
        ValueError: ``size`` < 1.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode if im.mode in _FULL_SCALE else "L"
            grey = im if im.mode == mode else im.convert("L")
            arr = np.asarray(grey, dtype=np.float32) / np.float32(_FULL_SCALE[mode])
    except FileNotFoundError as e:
        raise DataFormatError(path, "image file is missing") from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DataFormatError(path, f"not a readable image: {e}") from e
    resized = Image.fromarray(np.clip(arr, 0.0, 1.0)).resize(
        (size, size), Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.float32)
