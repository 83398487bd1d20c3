"""Reader for plain image folders whose sub-folder names are labels, with a held-out split.

``root/<LABEL>/<image>`` (e.g. ``kermany-cxr-224/train/{NORMAL,PNEUMONIA}/*.jpeg``). Folder
names map to CheXpert labels through ``label_map``; the studies have no report.

``KERMANY_LABELS`` is the documented mapping for the Kermany paediatric set: NORMAL is
"No Finding"; PNEUMONIA (bacterial or viral, the file name says which) is "Pneumonia" and
"Lung Opacity" (its visible sign). Only these labels are known for a folder image; every other
CheXpert label is unknown, not negative.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path

from model_export.data.records import DataFormatError, Study
from model_export.ssacl.anatomy import CHEXPERT_LABELS

SOURCE = "folder"
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
KERMANY_LABELS: dict[str, dict[str, int]] = {
    "NORMAL": {"No Finding": 1},
    "PNEUMONIA": {"Pneumonia": 1, "Lung Opacity": 1},
}
TEST_FRACTION = 0.1  # share of patients held out by ``held_out_split``
# Patient part of Kermany names: "person1_bacteria_1" -> person1, "NORMAL2-IM-1427-0001" ->
# NORMAL2-IM-1427 (one patient's images must not straddle the split).
_PATIENT = (re.compile(r"^(person\d+)_"), re.compile(r"^(.*IM-\d+)-\d+$"))


def split_key(file_name: str) -> str:
    """Grouping key of a file: the patient id where the name encodes one, else the stem."""
    stem = Path(file_name).stem
    for rx in _PATIENT:
        m = rx.match(stem)
        if m:
            return m.group(1)
    return stem


def split_of(file_name: str, test_fraction: float = TEST_FRACTION) -> str:
    """'test' or 'train', from a SHA-1 hash of ``split_key(file_name)`` (stable everywhere)."""
    digest = hashlib.sha1(split_key(file_name).encode("utf-8")).digest()
    return "test" if int.from_bytes(digest[:8], "big") / 2.0**64 < test_fraction else "train"


def held_out_split(
    studies: list[Study], split: str, test_fraction: float = TEST_FRACTION
) -> list[Study]:
    """The studies of ``split`` ('train' or 'test'), decided by hashed file name (patient)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not 0.0 <= test_fraction <= 1.0:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    return [s for s in studies if split_of(s.image_paths[0].name, test_fraction) == split]


def read_image_folder(
    root: Path, label_map: Mapping[str, Mapping[str, int]] = KERMANY_LABELS
) -> list[Study]:
    """One study per image, sorted by folder then file name; ``tags[0]`` is the folder name.

    Raises:
        DataFormatError: ``root`` is missing or holds no images, a sub-folder is not in
            ``label_map``, or a file is not an image (hidden files are ignored).
        ValueError: ``label_map`` names a label that is not a CheXpert label.
    """
    root = Path(root)
    for labels in label_map.values():
        bad = set(labels) - set(CHEXPERT_LABELS)
        if bad:
            raise ValueError(f"label_map uses unknown CheXpert labels {sorted(bad)}")
    if not root.is_dir():
        raise DataFormatError(root, "image folder is missing")
    out: list[Study] = []
    for folder in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if not folder.is_dir():
            raise DataFormatError(folder, "expected only label sub-folders here")
        if folder.name not in label_map:
            raise DataFormatError(folder, f"folder label not in label_map {sorted(label_map)}")
        for img in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
            if img.suffix.lower() not in IMAGE_EXTENSIONS or not img.is_file():
                raise DataFormatError(img, f"not an image file ({', '.join(IMAGE_EXTENSIONS)})")
            out.append(
                Study(
                    study_id=f"{folder.name}/{img.stem}",
                    image_paths=(img,),
                    split=split_of(img.name),
                    source=SOURCE,
                    labels=dict(label_map[folder.name]),
                    tags=(folder.name,),
                )
            )
    if not out:
        raise DataFormatError(root, "no images found")
    return out
