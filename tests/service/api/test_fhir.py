"""The FHIR export: a hand-made ReportResponse -> Bundle, validated with fhir.resources (R4B).

fhir.resources >= 7 has no plain R4 package (6.x, the last with R4 4.0.1, needs pydantic v1);
its R4B (4.3.0) models are used, and the bundle only uses elements R4 and R4B share. Those
models check structure and cardinality but not code values or reference targets, so the tests
check those by hand.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from model_export.ssacl import anatomy
from service.api import fhir_codes
from service.api.fhir import report_bundle
from service.api.schemas import (
    AnatomyNodeOut,
    BoxOut,
    EntityOut,
    ImageOut,
    ModelRef,
    ReportResponse,
    SentenceOut,
)

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)
TEXT = (
    "The cardiac silhouette is enlarged. No pleural effusion or pneumothorax. "
    "Mild degenerative changes of the thoracic spine."
)


def _node(name: str) -> AnatomyNodeOut:
    nid = anatomy.NODE_NAMES.index(name)
    return AnatomyNodeOut(id=nid, name=name, path=["chest", name])


def _sentence(text: str, node: str, confidence: float) -> SentenceOut:
    box = BoxOut(x0=10, y0=20, x1=300, y1=400)
    return SentenceOut(
        text=text, anatomy=[_node(node)], confidence=confidence, box=box, heatmap=None
    )


def _report(**changes: Any) -> ReportResponse:
    fields: dict[str, Any] = {
        "request_id": "req-123",
        "report": TEXT,
        "findings": TEXT,
        "impression": "Cardiomegaly.",
        "entities": [EntityOut(name="Cardiomegaly", probability=0.91, predicted=True)],
        "anatomy_candidates": ["mediastinum", "lungs"],
        "sentences": [
            _sentence("The cardiac silhouette is enlarged.", "cardiac silhouette", 0.74),
            _sentence("No pleural effusion or pneumothorax.", "right costophrenic angle", 0.5),
            _sentence("Mild degenerative changes of the thoracic spine.", "spine", 0.125),
        ],
        "num_tokens": 21,
        "image": ImageOut(source="png", width=512, height=512),
        "model": ModelRef(name="ssacl-small", version="1.2.3", weights_sha256="ab" * 32),
        "timings_ms": {"total": 12.5},
        "batch_size": 1,
        "grounding_method": "anatomy-pooling",
    }
    return ReportResponse(**{**fields, **changes})


def _by_type(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def _codes(concept: dict[str, Any], system: str) -> list[str]:
    return [c["code"] for c in concept.get("coding", []) if c["system"] == system]


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    return report_bundle(_report(), now=NOW)


def test_bundle_validates_and_round_trips(bundle: dict[str, Any]) -> None:
    wire = json.loads(json.dumps(bundle))  # plain JSON types only
    model = Bundle.model_validate(wire)
    assert json.loads(model.model_dump_json(exclude_none=True)) == wire
    for entry in bundle["entry"]:
        res = entry["resource"]
        cls = get_fhir_model_class(res["resourceType"])
        assert json.loads(cls.model_validate(res).model_dump_json(exclude_none=True)) == res


def test_bundle_shape(bundle: dict[str, Any]) -> None:
    assert bundle["type"] == "collection" and bundle["timestamp"] == "2024-05-06T07:08:09Z"
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]
    assert kinds == ["DiagnosticReport", *["Observation"] * 3, "Device", "Provenance"]
    urls = {e["fullUrl"] for e in bundle["entry"]}
    assert all(e["fullUrl"] == f"urn:uuid:{e['resource']['id']}" for e in bundle["entry"])
    refs = json.dumps(bundle).count('"reference": "urn:uuid:')
    assert refs > 0
    for ref in _all_references(bundle):
        assert ref in urls  # every reference resolves inside the bundle
    assert report_bundle(_report(), now=NOW) == bundle  # deterministic ids


def _all_references(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return own + [r for v in node.values() for r in _all_references(v)]
    if isinstance(node, list):
        return [r for v in node for r in _all_references(v)]
    return []


def test_diagnostic_report(bundle: dict[str, Any]) -> None:
    (dr,) = _by_type(bundle, "DiagnosticReport")
    (device,) = _by_type(bundle, "Device")
    assert dr["status"] == "preliminary"
    assert _codes(dr["category"][0], fhir_codes.V2_0074) == ["RAD"]
    assert _codes(dr["code"], fhir_codes.LOINC) == ["36554-4"]
    assert dr["conclusion"] == "Cardiomegaly."
    (form,) = dr["presentedForm"]
    assert form["contentType"] == "text/plain"
    assert base64.b64decode(form["data"]).decode("utf-8") == TEXT
    obs_ids = [f"urn:uuid:{o['id']}" for o in _by_type(bundle, "Observation")]
    assert [r["reference"] for r in dr["result"]] == obs_ids
    assert "performer" not in dr  # R4: performer cannot be a Device
    assert dr["extension"][0]["valueReference"]["reference"] == f"urn:uuid:{device['id']}"
    assert "not for clinical use" in dr["text"]["div"] and "ssacl-small 1.2.3" in dr["text"]["div"]
    assert dr["identifier"][0]["value"] == "req-123"


def test_observations(bundle: dict[str, Any]) -> None:
    heart, pleura, bones = _by_type(bundle, "Observation")
    sct = fhir_codes.SNOMED
    assert _codes(heart["code"], sct) == ["8186001"] and heart["code"]["text"] == "Cardiomegaly"
    assert _codes(heart["valueCodeableConcept"], sct) == ["52101004"]
    assert _codes(heart["bodySite"], sct) == ["80891009"]
    assert heart["note"][0]["text"] == "The cardiac silhouette is enlarged."
    # two negated findings: the first is the code, the other a component
    assert _codes(pleura["valueCodeableConcept"], sct) == ["2667000"]
    stated = {pleura["code"]["text"]} | {
        c["code"]["text"] for c in pleura["component"] if "valueCodeableConcept" in c
    }
    assert stated == {"Pleural Effusion", "Pneumothorax"}
    assert "valueCodeableConcept" not in bones and bones["valueString"] == bones["note"][0]["text"]
    assert _codes(bones["code"], fhir_codes.LOINC) == ["18782-3"]
    assert _codes(bones["bodySite"], sct) == ["122495006"]
    assert _codes(bones["bodySite"], fhir_codes.ANATOMY_SYSTEM) == ["29"]
    for obs in (heart, pleura, bones):
        assert obs["status"] == "preliminary" and obs["device"]["reference"].startswith("urn:")
    parts = {c["code"]["coding"][0]["code"]: c for c in heart["component"]}
    assert [parts[f"box-{k}"]["valueInteger"] for k in ("x0", "y0", "x1", "y1")] == [
        10,
        20,
        300,
        400,
    ]
    assert parts["confidence"]["valueQuantity"]["value"] == 0.74


def test_uncertain_sentence_is_indeterminate() -> None:
    rep = _report(sentences=[_sentence("Possible small left pleural effusion.", "lungs", 0.3)])
    (obs,) = _by_type(report_bundle(rep, now=NOW), "Observation")
    assert obs["code"]["text"] == "Pleural Effusion"
    assert _codes(obs["valueCodeableConcept"], fhir_codes.SNOMED) == ["82334004"]


def test_normal_sentence_is_no_finding_present() -> None:
    rep = _report(
        sentences=[_sentence("No acute osseous abnormality.", "skeletal structures", 0.2)]
    )
    (obs,) = _by_type(report_bundle(rep, now=NOW), "Observation")
    assert obs["code"] == {"text": "No Finding"}  # text only: no SNOMED CT code we are sure of
    assert _codes(obs["valueCodeableConcept"], fhir_codes.SNOMED) == ["52101004"]
    assert _codes(obs["bodySite"], fhir_codes.SNOMED) == []  # "skeletal structures": text only
    assert _codes(obs["bodySite"], fhir_codes.ANATOMY_SYSTEM) == ["3"]


def test_empty_report_still_validates() -> None:
    rep = _report(report="", findings=None, impression=None, sentences=[])
    out = report_bundle(rep)
    Bundle.model_validate(out)
    (dr,) = _by_type(out, "DiagnosticReport")
    assert "result" not in dr and "presentedForm" not in dr and "conclusion" not in dr
    assert out["timestamp"].endswith("Z")


def test_code_tables_cover_graph_and_labels() -> None:
    assert tuple(fhir_codes.ANATOMY_SNOMED) == anatomy.NODE_NAMES
    assert tuple(fhir_codes.FINDING_SNOMED) == anatomy.CHEXPERT_LABELS
    codes = [c.code for c in fhir_codes.ANATOMY_SNOMED.values() if c is not None]
    codes += [c.code for c in fhir_codes.FINDING_SNOMED.values() if c is not None]
    assert len(codes) == len(set(codes)) and all(c.isdigit() for c in codes)


def test_codes_doc_matches_tables() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "CODES.md").read_text(encoding="utf-8")
    for i, name in enumerate(anatomy.NODE_NAMES):
        code = fhir_codes.ANATOMY_SNOMED[name]
        assert f"| {i} | {name} | {code.code if code else '— (text only)'} |" in doc
    for name in anatomy.CHEXPERT_LABELS:
        code = fhir_codes.FINDING_SNOMED[name]
        assert f"| {name} | {code.code if code else '— (text only)'} |" in doc
