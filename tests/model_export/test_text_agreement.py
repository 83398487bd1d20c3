"""Agreement report on a tiny generated IU archive (hand-written reports)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from model_export.data.iu_xml import read_iu_xml
from model_export.data.records import Study
from model_export.ssacl.anatomy import FINDINGS
from model_export.text_agreement import evaluate, main, micro_macro

XML = """<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="CXR{n}"/>
<Abstract><AbstractText Label="FINDINGS">{findings}</AbstractText>
<AbstractText Label="IMPRESSION">{impression}</AbstractText></Abstract>
<MeSH>{tags}</MeSH><parentImage id="CXR{n}_IM-0001-1001"/></eCitation>"""


def study(sid: str, report: str, tags: tuple[str, ...]) -> Study:
    return Study(sid, (), report=report, tags=tags)


def test_evaluate_counts() -> None:
    studies = [
        study(
            "a",
            "Small left pleural effusion. The heart is enlarged.",
            ("Pleural Effusion/left/small", "Cardiomegaly"),
        ),  # fmt: skip
        study("b", "Left basilar atelectasis.", ("Pulmonary Atelectasis/base/right",)),
        study("c", "Lungs are clear. No effusion.", ("Pleural Effusion/right",)),
        study("d", "Normal chest.", ("normal",)),
        study("e", "Right lower lobe pneumonia.", ("No Indexing",)),  # excluded
        study("f", "", ("normal",)),  # excluded: no text
    ]
    agg = evaluate(studies)
    assert agg.n_studies == 4
    eff = agg.labels["Pleural Effusion"]
    assert (eff.tp, eff.fp, eff.fn) == (1, 0, 1)
    assert agg.labels["Cardiomegaly"].prf() == (1.0, 1.0, 1.0)
    assert agg.labels["Pneumonia"].tp + agg.labels["Pneumonia"].fp == 0
    nf = agg.labels["No Finding"]
    assert (nf.tp, nf.fp, nf.fn) == (1, 1, 0)  # study c: text normal, tag says effusion
    # locations: a (left effusion) agrees; b (tag right, text left) disagrees; c mentions the
    # effusion only negated, which grounds to both costophrenic angles and so agrees
    assert sum(agg.loc_total.values()) == 3
    assert sum(agg.loc_mentioned.values()) == 3
    assert sum(agg.loc_agree.values()) == 2
    micro, macro = micro_macro(agg.labels, ["Pleural Effusion", "Cardiomegaly", "Atelectasis"])
    assert 0 < micro < 1 and 0 < macro < 1


def test_cli_writes_markdown(tmp_path: Path, capsys: object) -> None:
    archive = tmp_path / "reports.tgz"
    docs = {
        1: ("The heart is enlarged.", "Cardiomegaly.", "<major>Cardiomegaly</major>"),
        2: (
            "Right upper lobe opacity.",
            "Pneumonia.",
            "<major>Opacity/lung/upper lobe/right</major>",
        ),
    }
    with tarfile.open(archive, "w:gz") as tar:
        for n, (f, i, t) in docs.items():
            data = XML.format(n=n, findings=f, impression=i, tags=t).encode()
            info = tarfile.TarInfo(f"ecgen-radiology/{n}.xml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "docs" / "TEXT_TOOLS.md"
    assert main(["--iu", str(archive), "--out", str(out)]) == 0
    text = out.read_text()
    assert "**2 studies**" in text
    assert "| Cardiomegaly | 1 | 1 | 1 | 1.000 | 1.000 | 1.000 |" in text
    assert "| upper lobe | 1 | 1 | 1/1 (100.0%) |" in text
    assert "imperfect reference" in text


@pytest.mark.slow
def test_real_iu_agreement_floor() -> None:
    """Regression floor on the real reports (measured: micro F1 0.943, locations 94.1%)."""
    tgz = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "iu-reports"
    tgz = tgz / "NLMCXR_reports.tgz"
    if not tgz.exists():
        pytest.skip(f"IU reports absent: {tgz}")
    agg = evaluate(read_iu_xml(tgz))
    micro, macro = micro_macro(agg.labels, FINDINGS)
    assert agg.n_studies == 3832
    assert micro >= 0.90 and macro >= 0.85
    located = sum(agg.loc_agree.values()) / sum(agg.loc_mentioned.values())
    assert located >= 0.90
