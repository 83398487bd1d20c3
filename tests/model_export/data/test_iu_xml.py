"""IU X-ray XML reader on tiny generated fixtures in the real layout, and on the real archive."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from model_export.data.iu_xml import (
    iu_uid,
    parse_iu_xml,
    r2gen_study_id,
    read_iu_xml,
    read_r2gen_split,
)
from model_export.data.records import DataFormatError

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"
IU_TGZ = SHARED / "iu-reports" / "NLMCXR_reports.tgz"
IU_SPLIT = SHARED / "iu-reports" / "r2gen_split.csv"


def iu_xml(
    n: int,
    findings: str = "The heart is normal. No effusion.",
    impression: str = "No acute disease.",
    tags: tuple[str, ...] = ("normal",),
    images: tuple[str, ...] = ("3001", "4001"),
) -> str:
    """One eCitation document shaped like ecgen-radiology/<n>.xml (hand-written text)."""
    majors = "".join(f"<major>{t}</major>" for t in tags)
    parents = "".join(
        f'<parentImage id="CXR{n}_IM-{n:04d}-{i}"><figureId>F1</figureId>'
        f'<panel type="single"><url>/x/CXR{n}_IM-{n:04d}-{i}.jpg</url></panel></parentImage>'
        for i in images
    )
    return f"""<?xml version="1.0" encoding="utf-8"?>
<eCitation><meta type="rr"/><uId id="CXR{n}"/><pmcId id="{n}"/>
<MedlineCitation><Article><Abstract>
  <AbstractText Label="COMPARISON">None.</AbstractText>
  <AbstractText Label="INDICATION">Cough</AbstractText>
  <AbstractText Label="FINDINGS">{findings}</AbstractText>
  <AbstractText Label="IMPRESSION">{impression}</AbstractText>
</Abstract></Article></MedlineCitation>
<MeSH>{majors}</MeSH>{parents}</eCitation>"""


def write_tgz(path: Path, docs: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in docs.items():
            data = text.encode()
            info = tarfile.TarInfo(f"ecgen-radiology/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_parse_fields() -> None:
    study = parse_iu_xml(
        iu_xml(7, tags=("Opacity/lung/base/left", "Cardiomegaly/mild")).encode(), "7.xml"
    )
    assert study.study_id == "CXR7_IM-0007"
    assert [p.name for p in study.image_paths] == ["CXR7_IM-0007-3001.png", "CXR7_IM-0007-4001.png"]
    assert study.findings == "The heart is normal. No effusion."
    assert study.impression == "No acute disease."
    assert study.report == "The heart is normal. No effusion. No acute disease."
    assert study.tags == ("Opacity/lung/base/left", "Cardiomegaly/mild")
    assert study.source == "iu-xml" and study.split is None


def test_empty_sections_and_no_images() -> None:
    study = parse_iu_xml(iu_xml(9, findings="", images=()).encode(), "9.xml")
    assert study.findings == "" and study.report == "No acute disease."
    assert study.study_id == "CXR9" and study.image_paths == ()


def test_study_ids_follow_r2gen() -> None:
    assert (
        r2gen_study_id("CXR1", ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]) == "CXR1_1_IM-0001"
    )
    assert r2gen_study_id("CXR2", ["CXR2_IM-0933-0001-0001"]) == "CXR2_IM-0933-0001"
    assert r2gen_study_id("CXR3", []) == "CXR3"
    assert iu_uid("CXR1_1_IM-0001") == "CXR1" and iu_uid("CXR3") == "CXR3"


def test_read_tgz_and_dir_in_numeric_order(tmp_path: Path) -> None:
    docs = {f"{n}.xml": iu_xml(n) for n in (10, 2, 1)}
    from_tgz = read_iu_xml(write_tgz(tmp_path / "r.tgz", docs))
    folder = tmp_path / "dir" / "ecgen-radiology"
    folder.mkdir(parents=True)
    for name, text in docs.items():
        (folder / name).write_text(text)
    from_dir = read_iu_xml(tmp_path / "dir")
    assert [s.study_id for s in from_tgz] == ["CXR1_IM-0001", "CXR2_IM-0002", "CXR10_IM-0010"]
    assert from_dir == from_tgz


def test_splits_are_attached(tmp_path: Path) -> None:
    csv = tmp_path / "split.csv"
    csv.write_text("study_id,split,image_paths\nCXR1_IM-0001,test,a/0.png;a/1.png\n")
    splits = read_r2gen_split(csv)
    assert splits == {"CXR1_IM-0001": "test"}
    studies = read_iu_xml(
        write_tgz(tmp_path / "r.tgz", {"1.xml": iu_xml(1), "2.xml": iu_xml(2)}), splits
    )
    assert [s.split for s in studies] == ["test", None]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<eCitation><uId id='CXR5'/>", "malformed XML"),
        ("<eCitation><pmcId id='5'/></eCitation>", "uId"),
        (
            "<eCitation><uId id='CXR5'/>"
            "<AbstractText Label='FINDINGS'>x</AbstractText></eCitation>",
            "IMPRESSION",
        ),
    ],
)
def test_malformed_xml_names_the_file(tmp_path: Path, text: str, problem: str) -> None:
    archive = write_tgz(tmp_path / "r.tgz", {"1.xml": iu_xml(1), "5.xml": text})
    with pytest.raises(DataFormatError, match=problem) as err:
        read_iu_xml(archive)
    assert "ecgen-radiology/5.xml" in str(err.value)


def test_missing_or_empty_inputs(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="does not exist"):
        read_iu_xml(tmp_path / "absent.tgz")
    with pytest.raises(DataFormatError, match="no ecgen-radiology"):
        read_iu_xml(write_tgz(tmp_path / "empty.tgz", {}))
    (tmp_path / "bad.tgz").write_bytes(b"not a tar archive")
    with pytest.raises(DataFormatError, match="bad.tgz"):
        read_iu_xml(tmp_path / "bad.tgz")


def test_bad_split_files(tmp_path: Path) -> None:
    bad = tmp_path / "s.csv"
    bad.write_text("study_id,split\nA,train\nA,test\n")
    with pytest.raises(DataFormatError, match="duplicate"):
        read_r2gen_split(bad)
    bad.write_text("study_id,split\nA,holdout\n")
    with pytest.raises(DataFormatError, match="line 2"):
        read_r2gen_split(bad)
    bad.write_text("id,fold\nA,train\n")
    with pytest.raises(DataFormatError, match="columns"):
        read_r2gen_split(bad)


def test_real_archive_parses_all_reports() -> None:
    if not IU_TGZ.exists() or not IU_SPLIT.exists():
        pytest.skip(f"IU reports absent: {IU_TGZ}")
    splits = read_r2gen_split(IU_SPLIT)
    studies = read_iu_xml(IU_TGZ, splits)
    assert len(studies) == 3955
    assert len({s.study_id for s in studies}) == 3955
    assert sum(bool(s.findings and s.impression) for s in studies) == 3419
    matched = [s.split for s in studies if s.split]
    assert len(matched) == len(splits) == 2955
    assert (matched.count("train"), matched.count("val"), matched.count("test")) == (2069, 296, 590)
