"""Reader for MIMIC-CXR-JPG (images, split, CheXpert labels) with MIMIC-CXR report files.

Layout under ``root`` (the PhysioNet layouts; ``.csv`` or ``.csv.gz``)::

    mimic-cxr-2.0.0-split.csv          dicom_id,study_id,subject_id,split
    mimic-cxr-2.0.0-chexpert.csv       subject_id,study_id,<14 CheXpert columns>   (optional)
    files/p10/p10000032/s50414267/<dicom_id>.jpg
    files/p10/p10000032/s50414267.txt  the free-text report (``reports_root`` may hold it)

Split ``validate`` is returned as ``val``. CheXpert values 1 / 0 / -1 become ``Study.labels``;
blank cells are left out. Reports are cut into sections with ``parse_sections``.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Iterator
from pathlib import Path

from model_export.data.records import DataFormatError, Study
from model_export.ssacl.anatomy import CHEXPERT_LABELS

SOURCE = "mimic-cxr"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv"
CHEXPERT_FILE = "mimic-cxr-2.0.0-chexpert.csv"
_SPLITS = {"train": "train", "validate": "val", "val": "val", "test": "test"}
# A section header: a line starting with upper-case words and a colon ("FINDINGS:", "WET READ:").
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z0-9 /&()'-]*[A-Z)]):", re.MULTILINE)
_ALIASES = {
    "FINDINGS": "findings",
    "FINDING": "findings",
    "FINDINGS AND IMPRESSION": "findings",
    "IMPRESSION": "impression",
    "IMPRESSIONS": "impression",
    "CONCLUSION": "impression",
}


def _clean(text: str) -> str:
    return " ".join(text.split())


def parse_sections(text: str) -> dict[str, str]:
    """Report text -> {header in lower case: section text on one line}.

    Headers are upper-case words followed by a colon at the start of a line; a section runs
    (over several lines) to the next header. ``findings`` and ``impression`` also collect their
    aliases (FINDINGS AND IMPRESSION, CONCLUSION, ...). Text before the first header is under
    ``""``.
    """
    out: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    starts = [0, *(m.start() for m in matches)]
    names = ["", *(m.group(1).strip() for m in matches)]
    bodies = [text[: starts[1] if matches else len(text)]]
    bodies += [text[m.end() : (matches[i + 1].start() if i + 1 < len(matches) else len(text))]
               for i, m in enumerate(matches)]  # fmt: skip
    for name, body in zip(names, bodies, strict=True):
        key = _ALIASES.get(name, name.lower())
        cleaned = _clean(body)
        if cleaned:
            out[key] = f"{out[key]} {cleaned}" if key in out else cleaned
    return out


def report_parts(text: str) -> tuple[str, str]:
    """(findings, impression) of a report; without either header, the last paragraph is the
    impression (the fallback of MIMIC-CXR's own section extraction)."""
    sec = parse_sections(text)
    findings, impression = sec.get("findings", ""), sec.get("impression", "")
    if not findings and not impression:
        paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
        impression = _clean(_HEADER.sub("", paragraphs[-1])) if paragraphs else ""
    return findings, impression


def _open_csv(path: Path) -> Iterator[dict[str, str]]:
    """Rows of a .csv or .csv.gz file; DataFormatError naming the file when it is unreadable."""
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            break
    else:
        raise DataFormatError(path, "missing (also looked for .gz)")
    try:
        raw = candidate.read_bytes()
        data = gzip.decompress(raw) if candidate.suffix == ".gz" else raw
        yield from csv.DictReader(io.StringIO(data.decode("utf-8")))
    except (OSError, UnicodeDecodeError, csv.Error, EOFError) as e:
        raise DataFormatError(candidate, f"unreadable CSV: {e}") from e


def _need(row: dict[str, str], cols: tuple[str, ...], path: Path, line: int) -> None:
    missing = [c for c in cols if not (row.get(c) or "").strip()]
    if missing:
        raise DataFormatError(path, f"line {line}: missing {', '.join(missing)}")


def read_split(root: Path) -> dict[str, tuple[str, str, list[str]]]:
    """study_id -> (subject_id, split, dicom ids in file order)."""
    path = root / SPLIT_FILE
    studies: dict[str, tuple[str, str, list[str]]] = {}
    for line, row in enumerate(_open_csv(path), start=2):
        _need(row, ("dicom_id", "study_id", "subject_id", "split"), path, line)
        split = _SPLITS.get(row["split"].strip())
        if split is None:
            raise DataFormatError(path, f"line {line}: unknown split {row['split']!r}")
        sid, subj = row["study_id"].strip(), row["subject_id"].strip()
        prev = studies.setdefault(sid, (subj, split, []))
        if prev[:2] != (subj, split):
            raise DataFormatError(path, f"line {line}: study {sid} has conflicting subject/split")
        prev[2].append(row["dicom_id"].strip())
    if not studies:
        raise DataFormatError(path, "no rows")
    return studies


def read_chexpert(root: Path) -> dict[str, dict[str, int]]:
    """study_id -> {label: 1 / 0 / -1}; empty when the optional file is absent."""
    path = root / CHEXPERT_FILE
    if not path.is_file() and not path.with_name(path.name + ".gz").is_file():
        return {}
    out: dict[str, dict[str, int]] = {}
    for line, row in enumerate(_open_csv(path), start=2):
        _need(row, ("study_id",), path, line)
        labels: dict[str, int] = {}
        for name in CHEXPERT_LABELS:
            cell = (row.get(name) or "").strip()
            if not cell:
                continue
            try:
                value = int(float(cell))
            except ValueError as e:
                raise DataFormatError(path, f"line {line}: {name}={cell!r} is not a number") from e
            if value not in (1, 0, -1):
                raise DataFormatError(path, f"line {line}: {name}={cell!r} not in 1/0/-1")
            labels[name] = value
        out[row["study_id"].strip()] = labels
    return out


def read_mimic(
    root: Path, reports_root: Path | None = None, check_images: bool = True
) -> list[Study]:
    """All studies of the split file, sorted by study id, with report sections and labels.

    Raises:
        DataFormatError: a CSV, report or (with ``check_images``) image file is missing or
            malformed; the message names the file.
    """
    root, reports = Path(root), Path(reports_root or root)
    labels = read_chexpert(root)
    out = []
    for sid, (subj, split, dicoms) in sorted(read_split(root).items()):
        rel = Path("files") / f"p{subj[:2]}" / f"p{subj}"
        study_dir = root / rel / f"s{sid}"
        images = tuple(study_dir / f"{d}.jpg" for d in dicoms)
        for img in images if check_images else ():
            if not img.is_file():
                raise DataFormatError(img, "image listed in the split file is missing")
        report_path = reports / rel / f"s{sid}.txt"
        try:
            text = report_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DataFormatError(report_path, f"report missing or unreadable: {e}") from e
        if not text.strip():
            raise DataFormatError(report_path, "empty report")
        findings, impression = report_parts(text)
        out.append(
            Study(
                study_id=sid,
                image_paths=images,
                report=" ".join(p for p in (findings, impression) if p),
                findings=findings,
                impression=impression,
                split=split,
                source=SOURCE,
                labels=labels.get(sid, {}),
            )
        )
    return out
