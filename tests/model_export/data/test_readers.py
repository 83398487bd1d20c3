"""Dataset readers on tiny fixtures written in each layout, plus the real Kermany folder."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model_export.data.readers import (
    KERMANY_LABELS,
    DataFormatError,
    held_out_split,
    load_grey,
    parse_sections,
    read_image_folder,
    read_iu_r2gen,
    read_mimic,
    report_parts,
    split_of,
)

SHARED = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  Cough.

 FINDINGS:
 There is a small left pleural effusion.  The heart size
 is normal.

 IMPRESSION:  Small left
 pleural effusion.
"""


def _png(path: Path, value: int = 128, size: tuple[int, int] = (20, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], value, np.uint8)).save(path)
    return path


def _mimic(root: Path, gz: bool = False) -> Path:
    rows = ["dicom_id,study_id,subject_id,split", "d1,50000001,10000032,train",
            "d2,50000001,10000032,train", "d3,50000002,11000099,validate"]  # fmt: skip
    split = "\n".join(rows) + "\n"
    if gz:
        (root / "mimic-cxr-2.0.0-split.csv.gz").write_bytes(gzip.compress(split.encode()))
    else:
        (root / "mimic-cxr-2.0.0-split.csv").write_text(split)
    (root / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        "subject_id,study_id,Pleural Effusion,Cardiomegaly,Edema\n"
        "10000032,50000001,1.0,0.0,\n11000099,50000002,-1.0,,\n"
    )
    base = root / "files"
    for rel in ("p10/p10000032/s50000001/d1.jpg", "p10/p10000032/s50000001/d2.jpg",
                "p11/p11000099/s50000002/d3.jpg"):  # fmt: skip
        _png(base / rel)
    (base / "p10/p10000032/s50000001.txt").write_text(REPORT)
    (base / "p11/p11000099/s50000002.txt").write_text("FINAL REPORT\n\nLungs are clear.\n")
    return root


def test_sections_are_parsed_across_lines() -> None:
    sec = parse_sections(REPORT)
    assert sec["findings"] == "There is a small left pleural effusion. The heart size is normal."
    assert sec["impression"] == "Small left pleural effusion."
    assert sec["indication"] == "Cough."
    assert report_parts("FINAL REPORT\n\nHistory here.\n\nNo acute process.\n") == (
        "",
        "No acute process.",
    )
    assert parse_sections("FINDINGS AND IMPRESSION: Clear.")["findings"] == "Clear."


@pytest.mark.parametrize("gz", [False, True])
def test_mimic_reader(tmp_path: Path, gz: bool) -> None:
    studies = read_mimic(_mimic(tmp_path, gz))
    a, b = studies
    assert a.study_id == "50000001" and a.split == "train" and a.source == "mimic-cxr"
    assert [p.name for p in a.image_paths] == ["d1.jpg", "d2.jpg"]
    assert a.impression == "Small left pleural effusion."
    assert a.report == f"{a.findings} {a.impression}" and "heart size is normal" in a.findings
    assert a.labels == {"Pleural Effusion": 1, "Cardiomegaly": 0}
    assert b.split == "val" and b.labels == {"Pleural Effusion": -1}
    assert b.findings == "" and b.impression == "Lungs are clear."


def test_mimic_missing_and_malformed_files_are_named(tmp_path: Path) -> None:
    root = _mimic(tmp_path)
    report = root / "files/p11/p11000099/s50000002.txt"
    report.unlink()
    with pytest.raises(DataFormatError, match="s50000002.txt"):
        read_mimic(root)
    report.write_text("  \n")
    with pytest.raises(DataFormatError, match="s50000002.txt.*empty"):
        read_mimic(root)
    report.write_text("IMPRESSION: ok")
    (root / "files/p10/p10000032/s50000001/d2.jpg").unlink()
    with pytest.raises(DataFormatError, match="d2.jpg"):
        read_mimic(root)
    assert len(read_mimic(root, check_images=False)) == 2
    (root / "mimic-cxr-2.0.0-chexpert.csv").write_text("subject_id,study_id,Edema\n1,50000001,x\n")
    with pytest.raises(DataFormatError, match="chexpert.csv.*line 2"):
        read_mimic(root, check_images=False)
    (root / "mimic-cxr-2.0.0-chexpert.csv").unlink()  # optional file
    (root / "mimic-cxr-2.0.0-split.csv").write_text("dicom_id,study_id\nd1,50000001\n")
    with pytest.raises(DataFormatError, match="split.csv.*line 2.*subject_id"):
        read_mimic(root, check_images=False)
    (root / "mimic-cxr-2.0.0-split.csv").unlink()
    with pytest.raises(DataFormatError, match="split.csv.*missing"):
        read_mimic(root)


def _iu(root: Path) -> Path:
    ann = {
        "train": [{"id": "CXR1_1_IM-0001", "report": "The heart is normal.\nLungs clear.",
                   "image_path": ["CXR1_1_IM-0001/0.png", "CXR1_1_IM-0001/1.png"],
                   "split": "train"}],
        "val": [{"id": "CXR2_IM-0002", "report": "No effusion.",
                 "image_path": ["CXR2_IM-0002/0.png"], "split": "val"}],
        "test": [],
    }  # fmt: skip
    (root / "annotation.json").write_text(json.dumps(ann))
    for rel in ("CXR1_1_IM-0001/0.png", "CXR1_1_IM-0001/1.png", "CXR2_IM-0002/0.png"):
        _png(root / "images" / rel)
    return root


def test_iu_r2gen_reader(tmp_path: Path) -> None:
    a, b = read_iu_r2gen(_iu(tmp_path))
    assert a.study_id == "CXR1_1_IM-0001" and a.split == "train" and a.source == "iu-xray"
    assert a.report == "The heart is normal. Lungs clear." == a.findings
    assert len(a.image_paths) == 2 and all(p.is_file() for p in a.image_paths)
    assert b.split == "val"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"train": [{"id": "x", "report": "r"}]}', r"train\[0\]: missing image_path"),
        ('{"train": [{"id": "x", "report": "r", "image_path": ["a.png"], "split": "test"}]}',
         "split 'test' listed under 'train'"),
        ('{"training": []}', "expected an object"),
    ],
)  # fmt: skip
def test_iu_r2gen_malformed(tmp_path: Path, content: str, match: str) -> None:
    (tmp_path / "annotation.json").write_text(content)
    with pytest.raises(DataFormatError, match=rf"annotation\.json.*{match}"):
        read_iu_r2gen(tmp_path, check_images=False)


def test_iu_r2gen_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"annotation\.json.*missing"):
        read_iu_r2gen(tmp_path)
    root = _iu(tmp_path)
    (root / "images/CXR2_IM-0002/0.png").unlink()
    with pytest.raises(DataFormatError, match=r"CXR2_IM-0002/0\.png"):
        read_iu_r2gen(root)


def test_image_folder_reader_and_split(tmp_path: Path) -> None:
    names = [f"person{i}_bacteria_{j}.jpeg" for i in range(40) for j in range(2)]
    for n in names:
        _png(tmp_path / "PNEUMONIA" / n)
    _png(tmp_path / "NORMAL" / "IM-0001-0001.jpeg")
    studies = read_image_folder(tmp_path)
    assert len(studies) == 81 and studies[0].study_id == "NORMAL/IM-0001-0001"
    assert studies[0].labels == {"No Finding": 1} and studies[0].tags == ("NORMAL",)
    assert studies[1].labels == KERMANY_LABELS["PNEUMONIA"] and studies[1].report == ""
    test, train = held_out_split(studies, "test"), held_out_split(studies, "train")
    assert len(test) + len(train) == 81 and 0 < len(test) < 25
    assert held_out_split(studies, "test") == test  # deterministic
    assert split_of("person7_bacteria_1.jpeg") == split_of("person7_virus_9.jpeg")  # by patient
    with pytest.raises(ValueError, match="split"):
        held_out_split(studies, "val")


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="missing"):
        read_image_folder(tmp_path / "nope")
    _png(tmp_path / "EFFUSION" / "a.png")
    with pytest.raises(DataFormatError, match="EFFUSION.*not in label_map"):
        read_image_folder(tmp_path)
    (tmp_path / "EFFUSION" / "notes.txt").write_text("x")
    with pytest.raises(DataFormatError, match="notes.txt"):
        read_image_folder(tmp_path, {"EFFUSION": {"Pleural Effusion": 1}})
    with pytest.raises(ValueError, match="unknown CheXpert"):
        read_image_folder(tmp_path, {"EFFUSION": {"Effusion": 1}})


def test_load_grey(tmp_path: Path) -> None:
    img = np.zeros((10, 20), np.uint8)
    img[:, 10:] = 255
    Image.fromarray(img).convert("RGB").save(tmp_path / "a.png")
    out = load_grey(tmp_path / "a.png", 8)
    assert out.shape == (8, 8) and out.dtype == np.float32
    assert out[:, 0].max() == 0.0 and out[:, -1].min() == 1.0  # squashed, not cropped
    Image.fromarray(np.full((6, 6), 65535 // 2, np.uint16)).save(tmp_path / "b.png")
    assert abs(float(load_grey(tmp_path / "b.png", 4).mean()) - 0.5) < 0.01
    (tmp_path / "c.png").write_bytes(b"not an image")
    with pytest.raises(DataFormatError, match="c.png"):
        load_grey(tmp_path / "c.png", 8)
    with pytest.raises(DataFormatError, match="d.png.*missing"):
        load_grey(tmp_path / "d.png", 8)


def test_kermany_folder_counts() -> None:
    root = SHARED / "kermany-cxr-224" / "train"
    if not root.exists():
        pytest.skip(f"{root} absent")
    studies = read_image_folder(root)
    tags = [s.tags[0] for s in studies]
    assert tags.count("NORMAL") == 1341 and tags.count("PNEUMONIA") == 3875
    test = held_out_split(studies, "test")
    assert 0.08 < len(test) / len(studies) < 0.12
    assert not {s.study_id for s in test} & {s.study_id for s in held_out_split(studies, "train")}
    img = load_grey(studies[0].image_paths[0], 64)
    assert img.shape == (64, 64) and 0.0 <= img.min() < img.max() <= 1.0
