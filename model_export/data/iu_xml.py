"""Reader for the raw IU X-ray (OpenI) report XML and the R2Gen split file (pure Python).

The archive ``NLMCXR_reports.tgz`` holds ``ecgen-radiology/<n>.xml``, one ``eCitation`` per
study: ``<uId id="CXR<n>"/>``, ``AbstractText`` elements labelled FINDINGS / IMPRESSION, MeSH
``<major>`` tags such as ``Opacity/lung/base/left`` and one ``<parentImage id=...>`` per image.

Study ids follow ``r2gen_split.csv``: R2Gen names a study after its first image id with the last
``-NNNN`` group removed (``CXR1_1_IM-0001-3001`` -> ``CXR1_1_IM-0001``). All 2,955 ids of the
split file are produced this way; the 104 studies without images keep their ``uId``
(``CXR<n>``). ``iu_uid`` maps either form back to ``CXR<n>``.

The reports are CC BY-NC-ND 4.0 (Demner-Fushman et al., JAMIA 2016): read them, never copy
edited text into the repository.
"""

from __future__ import annotations

import csv
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path

from model_export.data.records import DataFormatError, Study

SOURCE = "iu-xml"
_XML_NAME = re.compile(r"(?:^|/)ecgen-radiology/(\d+)\.xml$")
_LAST_GROUP = re.compile(r"-\d+$")
_SPLITS = ("train", "val", "test")


def r2gen_study_id(uid: str, image_ids: list[str] | tuple[str, ...]) -> str:
    """R2Gen-style study id: first image id minus its last ``-NNNN`` group, else ``uid``."""
    if not image_ids:
        return uid
    return _LAST_GROUP.sub("", image_ids[0])


def iu_uid(study_id: str) -> str:
    """The XML ``uId`` (``CXR<n>``) of an R2Gen-style or plain study id."""
    return study_id.split("_", 1)[0]


def _text(el: ET.Element | None) -> str:
    return " ".join((el.text or "").split()) if el is not None else ""


def parse_iu_xml(data: bytes, name: str | Path, split: str | None = None) -> Study:
    """Parse one ``ecgen-radiology`` XML document.

    Args:
        data: the raw XML bytes.
        name: the file name, used in error messages.
        split: the R2Gen split of the study, if known.

    Raises:
        DataFormatError: the XML is malformed or lacks ``uId`` / the FINDINGS and IMPRESSION
            elements.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise DataFormatError(name, f"malformed XML ({err})") from err
    uid_el = root.find("uId")
    uid = uid_el.get("id", "") if uid_el is not None else ""
    if not re.fullmatch(r"CXR\d+", uid):
        raise DataFormatError(name, f"missing or invalid <uId id='CXR<n>'> (got {uid!r})")
    sections = {el.get("Label", ""): el for el in root.iter("AbstractText")}
    missing = [s for s in ("FINDINGS", "IMPRESSION") if s not in sections]
    if missing:
        raise DataFormatError(name, f"no AbstractText Label={'/'.join(missing)}")
    findings, impression = _text(sections["FINDINGS"]), _text(sections["IMPRESSION"])
    image_ids = [el.get("id", "") for el in root.iter("parentImage")]
    if any(not i for i in image_ids):
        raise DataFormatError(name, "parentImage without an id")
    tags = tuple(_text(el) for el in root.iter("major") if _text(el))
    return Study(
        study_id=r2gen_study_id(uid, image_ids),
        image_paths=tuple(Path(f"{i}.png") for i in image_ids),
        report=" ".join(t for t in (findings, impression) if t),
        findings=findings,
        impression=impression,
        split=split,
        source=SOURCE,
        tags=tags,
    )


def _iter_tgz(path: Path) -> Iterator[tuple[str, bytes]]:
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                if member.isfile() and _XML_NAME.search(member.name):
                    fh = tar.extractfile(member)
                    if fh is None:
                        raise DataFormatError(f"{path}:{member.name}", "unreadable member")
                    yield f"{path}:{member.name}", fh.read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataFormatError(path, f"cannot read archive ({err})") from err


def _iter_dir(path: Path) -> Iterator[tuple[str, bytes]]:
    folder = path / "ecgen-radiology" if (path / "ecgen-radiology").is_dir() else path
    for xml in folder.glob("*.xml"):
        yield str(xml), xml.read_bytes()


def _number(name: str) -> int:
    m = re.search(r"(\d+)\.xml$", name)
    return int(m.group(1)) if m else -1


def read_iu_xml(tgz_or_dir: Path, splits: Mapping[str, str] | None = None) -> list[Study]:
    """Read every IU report, ordered by XML number (``1.xml``, ``2.xml``, ...).

    Args:
        tgz_or_dir: ``NLMCXR_reports.tgz`` (any tar compression) or a folder holding
            ``ecgen-radiology/*.xml`` (or the XML files themselves).
        splits: optional study id -> split (``read_r2gen_split``) to fill ``Study.split``.

    Raises:
        DataFormatError: the path is missing, holds no report XML, or one XML is malformed
            (the message names the file; nothing is skipped silently).
    """
    path = Path(tgz_or_dir)
    if not path.exists():
        raise DataFormatError(path, "IU report archive/folder does not exist")
    docs = list(_iter_dir(path) if path.is_dir() else _iter_tgz(path))
    if not docs:
        raise DataFormatError(path, "no ecgen-radiology/*.xml reports found")
    docs.sort(key=lambda d: _number(d[0]))
    studies = [parse_iu_xml(data, name) for name, data in docs]
    if splits is None:
        return studies
    return [replace(s, split=splits.get(s.study_id)) for s in studies]


def read_r2gen_split(csv_path: Path) -> dict[str, str]:
    """``r2gen_split.csv`` (``study_id,split,image_paths``) as study id -> train/val/test.

    Raises:
        DataFormatError: missing file or columns, an unknown split, or a duplicated id.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise DataFormatError(path, "split file does not exist")
    out: dict[str, str] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"study_id", "split"} <= set(reader.fieldnames):
            raise DataFormatError(path, f"expected columns study_id,split; got {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            sid, split = (row["study_id"] or "").strip(), (row["split"] or "").strip()
            if not sid or split not in _SPLITS:
                raise DataFormatError(path, f"line {line}: bad row {row!r}")
            if sid in out:
                raise DataFormatError(path, f"line {line}: duplicate study id {sid!r}")
            out[sid] = split
    return out
