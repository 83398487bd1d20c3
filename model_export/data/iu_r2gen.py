"""Reader for IU X-ray in the R2Gen layout: ``annotation.json`` plus ``images/``.

``annotation.json`` is ``{"train": [...], "val": [...], "test": [...]}``; each entry holds
``id``, ``report``, ``image_path`` (a list of paths relative to ``images/``) and ``split``.
R2Gen keeps one report text per study; it becomes ``Study.report`` and ``Study.findings``
(the raw XML reader ``iu_xml`` has the separate IMPRESSION).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from model_export.data.records import DataFormatError, Study

SOURCE = "iu-xray"
ANNOTATION = "annotation.json"
SPLITS = ("train", "val", "test")


def _entry(item: Any, split: str, where: str, path: Path, images: Path) -> Study:
    if not isinstance(item, dict):
        raise DataFormatError(path, f"{where}: entry is not an object")
    missing = [k for k in ("id", "report", "image_path") if k not in item]
    if missing:
        raise DataFormatError(path, f"{where}: missing {', '.join(missing)}")
    paths = item["image_path"]
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise DataFormatError(path, f"{where}: image_path must be a list of strings")
    if not isinstance(item["report"], str):
        raise DataFormatError(path, f"{where}: report must be a string")
    if item.get("split", split) != split:
        raise DataFormatError(path, f"{where}: split {item['split']!r} listed under {split!r}")
    report = " ".join(item["report"].split())
    return Study(
        study_id=str(item["id"]),
        image_paths=tuple(images / p for p in paths),
        report=report,
        findings=report,
        split=split,
        source=SOURCE,
    )


def read_iu_r2gen(root: Path, check_images: bool = True) -> list[Study]:
    """Studies of every split in file order (train, val, test).

    Raises:
        DataFormatError: ``annotation.json`` is missing or malformed, or (with
            ``check_images``) a listed image is missing; the message names the file.
    """
    root = Path(root)
    path = root / ANNOTATION
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise DataFormatError(path, "missing") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataFormatError(path, f"not valid JSON: {e}") from e
    if not isinstance(data, dict) or not any(s in data for s in SPLITS):
        raise DataFormatError(path, f"expected an object with keys {', '.join(SPLITS)}")
    unknown = sorted(set(data) - set(SPLITS))
    if unknown:
        raise DataFormatError(path, f"unknown split keys {unknown}")
    out: list[Study] = []
    for split in SPLITS:
        items = data.get(split, [])
        if not isinstance(items, list):
            raise DataFormatError(path, f"{split!r} must be a list")
        out += [
            _entry(item, split, f"{split}[{i}]", path, root / "images")
            for i, item in enumerate(items)
        ]
    ids = [s.study_id for s in out]
    if len(set(ids)) != len(ids):
        raise DataFormatError(path, "duplicate study ids")
    for img in (p for s in out for p in s.image_paths) if check_images else ():
        if not img.is_file():
            raise DataFormatError(img, "image listed in annotation.json is missing")
    return out
