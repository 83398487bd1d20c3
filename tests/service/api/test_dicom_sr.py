"""DICOM SR output of ``POST /v1/report`` (``Accept: application/dicom``).

The SR is read back with highdicom and with DCMTK's ``dsrdump`` (an independent parser); it
must sit in the source's study and reference the source image. The source is pydicom-data's
``RG1_UNCR.dcm``, a real CR chest radiograph whose patient and study attributes are all set.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.sr.coding import Code

from model_export.ssacl import anatomy
from service.api import dicom_sr, fhir_codes, sr_codes
from service.api.errors import ApiError
from service.api.schemas import (
    AnatomyNodeOut,
    BoxOut,
    EntityOut,
    ImageOut,
    ModelRef,
    ReportResponse,
    SentenceOut,
)
from service.app import create_app
from service.client import AsyncCxrClient, CxrClient, CxrClientError
from service.imaging.dicom_study import STUDY_KEYWORDS, study_ref
from service.imaging.types import DecodedImage

from .uvicorn_thread import HOST, serve

RG1 = Path(str(get_testdata_file("RG1_UNCR.dcm")))
WEIGHTS = Path(__file__).resolve().parents[3] / "weights"
SENTENCES = (
    ("The cardiac silhouette is enlarged.", "cardiac silhouette", (10, 20, 300, 400)),
    ("No pleural effusion or pneumothorax.", "right costophrenic angle", (0, 900, 640, 1955)),
    ("Possible left lower lobe consolidation.", "left lower lung zone", (920, 1000, 1841, 1700)),
    ("Mild degenerative changes of the thoracic spine.", "spine", (700, 100, 1100, 1900)),
)
#: identifying source values (long enough not to occur in a report by chance)
PATIENT_VALUES = ("CompressedSamples", "9RG1", "19400305", "exam Number", "1.3.6.1.4.1.5962")
DICOM = {"content-type": "application/dicom"}
SR_ACCEPT = {**DICOM, "accept": "application/dicom"}


def _sentence(text: str, node: str, box: tuple[int, int, int, int]) -> SentenceOut:
    nid = anatomy.NODE_NAMES.index(node)
    x0, y0, x1, y1 = box
    return SentenceOut(
        text=text,
        anatomy=[AnatomyNodeOut(id=nid, name=node, path=["chest", node])],
        confidence=0.625,
        box=BoxOut(x0=x0, y0=y0, x1=x1, y1=y1),
        heatmap=None,
    )


def _report(**changes: Any) -> ReportResponse:
    fields: dict[str, Any] = {
        "request_id": "req-sr",
        "report": " ".join(s[0] for s in SENTENCES),
        "findings": None,
        "impression": "Cardiomegaly.",
        "entities": [EntityOut(name="Cardiomegaly", probability=0.9, predicted=True)],
        "anatomy_candidates": ["mediastinum"],
        "sentences": [_sentence(*s) for s in SENTENCES],
        "num_tokens": 30,
        "image": ImageOut(source="dicom", width=1841, height=1955),
        "model": ModelRef(name="ssacl-small", version="1.2.3", weights_sha256="ab" * 32),
        "timings_ms": {"total": 1.0},
        "batch_size": 1,
        "grounding_method": "anatomy-pooling",
    }
    return ReportResponse(**{**fields, **changes})


@pytest.fixture(scope="module")
def source() -> pydicom.Dataset:
    return pydicom.dcmread(RG1, stop_before_pixels=True)


@pytest.fixture(scope="module")
def sr_bytes(source: pydicom.Dataset) -> bytes:
    return dicom_sr.report_sr(_report(), study_ref(source))


def _read(data: bytes) -> hd.sr.ComprehensiveSR:
    sr = hd.sr.srread(io.BytesIO(data))
    assert isinstance(sr, hd.sr.ComprehensiveSR)
    return sr


def test_sr_joins_the_source_study_and_references_the_image(
    sr_bytes: bytes, source: pydicom.Dataset
) -> None:
    sr = _read(sr_bytes)
    assert sr.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert sr.StudyInstanceUID == source.StudyInstanceUID and sr.Modality == "SR"
    assert sr.SeriesInstanceUID != source.SeriesInstanceUID  # its own series and instance
    assert sr.SOPInstanceUID != source.SOPInstanceUID
    ref = (source.StudyInstanceUID, source.SeriesInstanceUID)
    assert sr.get_evidence() == [(*ref, source.SOPInstanceUID, source.SOPClassUID)]
    assert (sr.PreliminaryFlag, sr.CompletionFlag, sr.VerificationFlag) == (
        "PRELIMINARY",
        "PARTIAL",
        "UNVERIFIED",
    )
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert [c.CodingSchemeDesignator for c in sr.CodingSchemeIdentificationSequence] == ["99SSACL"]


def _roi_reference(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations) -> tuple[str, str]:
    image = group.roi.ContentSequence[0].ReferencedSOPSequence[0]
    return image.ReferencedSOPInstanceUID, image.ReferencedSOPClassUID


def test_one_group_per_sentence_with_finding_site_box_and_text(
    sr_bytes: bytes, source: pydicom.Dataset
) -> None:
    groups = _read(sr_bytes).content.get_planar_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == [f"Sentence {i}" for i in (1, 2, 3, 4)]
    evaluations = [[(q.name.meaning, q.value.meaning) for q in g.get_qualitative_evaluations()]
                   for g in groups]  # fmt: skip
    assert evaluations == [
        [("Cardiomegaly", "Present")],
        [("Pneumothorax", "Absent"), ("Pleural effusion", "Absent")],
        [("Lung consolidation", "Indeterminate")],
        [],  # states no CheXpert finding: region, site and text only
    ]
    assert [g.finding_type.value if g.finding_type else None for g in groups] == [
        "8186001",
        "36118008",
        "95436008",
        None,
    ]
    sites = [(s.value.scheme_designator, s.value.value) for g in groups for s in g.finding_sites]
    assert sites == [("SCT", "80891009"), ("99SSACL", "anatomy-12"), ("99SSACL", "anatomy-16"),
                     ("SCT", "122495006")]  # fmt: skip
    for group, (text, _, (x0, y0, x1, y1)) in zip(groups, SENTENCES, strict=True):
        assert group.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        corners = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        assert group.roi.value.tolist() == corners  # closed rectangle, pixel-edge coordinates
        assert _roi_reference(group) == (source.SOPInstanceUID, source.SOPClassUID)
        texts = [i.TextValue for i in group[0].ContentSequence if i.ValueType == "TEXT"]
        assert text in texts
        (confidence,) = group.get_measurements(name=sr_codes.CONFIDENCE)
        assert confidence.value == 0.625


def test_report_text_model_and_disclaimer(sr_bytes: bytes) -> None:
    sr = _read(sr_bytes)
    root = sr.content[0]
    (qual,) = [i for i in root.ContentSequence if i.name == sr_codes.QUALITATIVE_EVALUATIONS]
    texts = {i.name.meaning: i.value for i in qual.ContentSequence}
    assert texts["Radiology Study observation (narrative)"] == _report().report
    assert texts["Impression"] == "Cardiomegaly."
    assert "not for clinical use" in texts["Comment"]
    (observer,) = sr.content.get_observer_contexts()
    names = {i.name.meaning: i.value for i in observer}
    assert names["Device Observer Name"] == "ssacl-small"
    assert names["Device Observer Model Name"] == "ssacl-small 1.2.3"
    group = sr.content.get_planar_roi_measurement_groups()[0]
    algorithm = {i.name.meaning: i.value for i in group[0].ContentSequence
                 if i.name.meaning.startswith("Algorithm")}  # fmt: skip
    assert algorithm == {
        "Algorithm Name": "ssacl-small",
        "Algorithm Version": "1.2.3",
        "Algorithm Parameters": "weights sha256 " + "ab" * 32,
    }
    assert sr.ManufacturerModelName == "ssacl-small" and sr.SoftwareVersions == "1.2.3"
    assert "not for clinical use" in sr.SeriesDescription


def test_only_the_study_attributes_are_copied(sr_bytes: bytes, source: pydicom.Dataset) -> None:
    sr = pydicom.dcmread(io.BytesIO(sr_bytes))
    for keyword in STUDY_KEYWORDS:
        assert str(sr[keyword].value) == str(source[keyword].value), keyword
    copied = {*STUDY_KEYWORDS, "SpecificCharacterSet", "InstanceNumber"}
    for element in source:  # any other source attribute in the SR holds the SR's own value
        if element.keyword in sr and element.keyword not in copied:
            assert sr[element.keyword].value != element.value, element.keyword
    for keyword in ("OtherPatientIDs", "InstitutionName", "StationName", "StudyDescription",
                    "ImageComments", "DeviceSerialNumber", "BodyPartExamined"):  # fmt: skip
        assert keyword in source and keyword not in sr


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="DCMTK's dsrdump is not installed")
def test_dsrdump_parses_the_sr(sr_bytes: bytes, source: pydicom.Dataset, tmp_path: Path) -> None:
    path = tmp_path / "sr.dcm"
    path.write_bytes(sr_bytes)
    run = subprocess.run(
        ["dsrdump", "+Pu", "+Pl", str(path)], capture_output=True, text=True, timeout=30
    )
    assert run.returncode == 0, run.stderr
    assert "E:" not in run.stderr and "W:" not in run.stderr, run.stderr
    out = run.stdout
    assert out.startswith("Comprehensive SR Document")
    for shown in ('"Finding")=(8186001,SCT,"Cardiomegaly")',
                  '"Cardiomegaly")=(52101004,SCT,"Present")',
                  '"Pleural effusion")=(2667000,SCT,"Absent")',
                  '"Lung consolidation")=(82334004,SCT,"Indeterminate")',
                  '"Finding Site")=(anatomy-16,99SSACL,"left lower lung zone")',
                  '"Imaging Measurement Report"', '(36554-4,LN,"XR Chest Single view")',
                  "POLYLINE", SENTENCES[3][0]):  # fmt: skip
        assert shown in out, shown
    assert out.count('"Measurement Group"') == len(SENTENCES)
    assert source.SOPInstanceUID in out  # +Pu: the referenced image's instance UID


def test_a_report_without_sentences_is_an_image_level_group(source: pydicom.Dataset) -> None:
    data = dicom_sr.report_sr(_report(sentences=[], impression=None), study_ref(source))
    sr = _read(data)
    (group,) = sr.content.get_image_measurement_groups()
    assert group.tracking_identifier == "Report"
    assert sr.content.get_planar_roi_measurement_groups() == []
    assert sr.StudyInstanceUID == source.StudyInstanceUID


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/dicom", True),
        ("application/json;q=0.5, Application/DICOM", True),
        ("application/dicom;q=0", False),
        ("application/json, application/dicom;q=0.5", False),  # JSON preferred
        ("application/dicom, */*;q=0.1", True),
        ("application/dicom+json", False),
        ("application/fhir+json", False),
        ("*/*", False),
        (None, False),
    ],
)
def test_wants_sr(accept: str | None, expected: bool) -> None:
    assert dicom_sr.wants_sr(accept) is expected


def test_sr_source_refuses_raster_and_unreferenceable_inputs(source: pydicom.Dataset) -> None:
    import numpy as np

    png = DecodedImage(pixels=np.zeros((64, 64), np.float32), source="png")
    with pytest.raises(ApiError) as err:
        dicom_sr.sr_source(png)
    assert err.value.problem.status == 406 and "DICOM input" in err.value.detail
    partial = source.copy()
    del partial.SOPInstanceUID
    bare = DecodedImage(pixels=png.pixels, source="dicom", study=study_ref(partial))
    with pytest.raises(ApiError, match="SOPInstanceUID"):
        dicom_sr.sr_source(bare)
    assert "CompressedSamples" not in repr(bare) + repr(study_ref(source))  # repr withholds


def test_route_answers_sr_for_dicom_and_406_for_png(
    make_client: Callable[..., Any], fake_engine: Callable[..., Any], images: dict[str, bytes]
) -> None:
    eng = fake_engine()
    with make_client(engine=eng) as c:
        png = {"content-type": "image/png", "accept": "application/dicom"}
        r = c.post("/v1/report", content=images["png8"], headers=png)
        assert r.status_code == 406 and r.headers["content-type"] == "application/problem+json"
        problem = r.json()
        assert problem["type"].endswith("/not-acceptable") and "DICOM input" in problem["detail"]
        assert eng.batch_sizes == []  # refused before the engine ran
        r = c.post("/v1/report?heatmaps=false", content=RG1.read_bytes(), headers=SR_ACCEPT)
        assert r.status_code == 200 and r.headers["content-type"] == "application/dicom"
        assert r.headers["vary"] == "Accept"
        sr = _read(r.content)
        assert sr.StudyInstanceUID == pydicom.dcmread(RG1, stop_before_pixels=True).StudyInstanceUID
        doc = c.get("/openapi.json").json()["paths"]["/v1/report"]["post"]["responses"]
        assert "application/dicom" in doc["200"]["content"] and "406" in doc


def test_codes_doc_lists_every_sr_code() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "CODES.md").read_text(encoding="utf-8")
    sr_doc = doc[doc.index("# Codes of the DICOM SR export") :]
    used = [v for v in vars(sr_codes).values() if isinstance(v, Code)]
    assert len(used) >= 10
    for code in used:
        assert f"`{code.value}`" in sr_doc, code
    for i, label in enumerate(anatomy.CHEXPERT_LABELS):
        snomed = fhir_codes.FINDING_SNOMED[label]
        assert sr_codes.finding_code(label).value == (snomed.code if snomed else f"chexpert-{i}")
    assert sr_codes.anatomy_code(12, "right costophrenic angle").value == "anatomy-12"
    assert sr_codes.anatomy_code(25, "cardiac silhouette").value == "80891009"


@pytest.fixture(scope="module")
def real_engine() -> Any:
    if not (WEIGHTS / "manifest.json").is_file():
        pytest.skip(f"no shipped weights at {WEIGHTS}")
    from service.inference.engine import OrtEngine

    return OrtEngine.from_weights(WEIGHTS, provider="cpu", threads=1)


def test_real_app_real_weights_sr_and_json(
    real_engine: Any,
    make_settings: Callable[..., Any],
    images: dict[str, bytes],
    cxr_logs: list[dict[str, Any]],
) -> None:
    """Real uvicorn, real weights, a real CR chest: SR via the client, JSON without PHI."""
    source = pydicom.dcmread(RG1, stop_before_pixels=True)
    app = create_app(make_settings(log_level="INFO"), lambda s: real_engine)
    with serve(app, name="uvicorn-sr") as port:
        url = f"http://{HOST}:{port}"
        with CxrClient(url) as client:
            sr = _read(client.report_sr(RG1, heatmaps=False))
            body = client.report(RG1, heatmaps=False)

        async def png_sr() -> None:
            async with AsyncCxrClient(url) as aclient:
                await aclient.report_sr(images["png8"])

        with pytest.raises(CxrClientError) as err:
            asyncio.run(png_sr())
    assert err.value.status_code == 406 and err.value.type is not None
    assert sr.StudyInstanceUID == source.StudyInstanceUID
    groups = sr.content.get_planar_roi_measurement_groups()
    assert groups and len(groups) == len(body["sentences"])  # same input, same report
    for group, sentence in zip(groups, body["sentences"], strict=True):
        assert _roi_reference(group) == (source.SOPInstanceUID, source.SOPClassUID)
        b = sentence["box"]
        assert group.roi.value[0].tolist() == [b["x0"], b["y0"]]
    text = json.dumps(body) + json.dumps(cxr_logs)
    assert cxr_logs and not [v for v in PATIENT_VALUES if v in text]
