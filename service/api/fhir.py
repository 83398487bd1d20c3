"""A report as a FHIR R4 ``Bundle`` (type ``collection``), for ``Accept: application/fhir+json``.

The bundle holds one ``DiagnosticReport`` (status ``preliminary``, category radiology, LOINC
36554-4 "XR Chest Single view"), one ``Observation`` per sentence, the ``Device`` (the model)
and a ``Provenance`` naming the device as author of the report and observations. R4's
``DiagnosticReport`` has neither ``note`` nor a ``Device`` performer, so the disclaimer and the
model are in its narrative (``text``) and the device is referenced by an extension
(``fhir_codes.DEVICE_EXTENSION``), by ``Observation.device`` and by the ``Provenance``.

Each sentence's CheXpert findings come from the rule-based labeler
(``model_export.ssacl.text.label_sentence``): the strongest stated finding is the observation's
``code`` and ``valueCodeableConcept`` (SNOMED CT Present / Absent / Indeterminate); further
findings of the same sentence are components. A sentence stating no finding is a narrative
observation (LOINC 18782-3) with the sentence as ``valueString``. Every observation carries
the sentence as a note, the deepest anatomy node as ``bodySite``, the box (``[x0, y0, x1, y1)``
in original-image pixels) as four integer components and the confidence as a quantity.
Ids are UUID-5s of the request id, so one response always gives the same bundle. Only elements
that R4 (4.0.1) and R4B (4.3.0) share are used; no patient or study data is sent.
"""

from __future__ import annotations

import base64
import html
import uuid
from datetime import datetime, timezone
from typing import Any

from model_export.ssacl.anatomy import CHEXPERT_LABELS
from model_export.ssacl.text import LabelState, label_sentence
from service.api import fhir_codes as C
from service.api.schemas import AnatomyNodeOut, ModelRef, ReportResponse, SentenceOut

FHIR_MEDIA_TYPE = "application/fhir+json"
FHIR_VERSION = "4.0.1"

Json = dict[str, Any]


def report_bundle(report: ReportResponse, *, now: datetime | None = None) -> Json:
    """The report as a FHIR R4 collection ``Bundle`` (JSON-ready dict); ``now`` stamps it."""
    at = _instant(now)
    ids = _Ids(report.request_id)
    device_ref = {"reference": ids.urn("device"), "display": report.model.name}
    observations = [
        _observation(s, ids.uuid(f"observation/{i}"), at, device_ref)
        for i, s in enumerate(report.sentences)
    ]
    obs_refs = [{"reference": _urn(o["id"])} for o in observations]
    resources = [
        _diagnostic_report(report, ids.uuid("report"), at, obs_refs, device_ref),
        *observations,
        _device(report.model, ids.uuid("device"), report.disclaimer),
        _provenance(ids, at, [{"reference": ids.urn("report")}, *obs_refs], device_ref),
    ]
    return {
        "resourceType": "Bundle",
        "id": ids.uuid("bundle"),
        "meta": {"lastUpdated": at},
        "type": "collection",
        "timestamp": at,
        "entry": [{"fullUrl": _urn(r["id"]), "resource": r} for r in resources],
    }


class _Ids:
    """Stable resource ids: UUID-5 of the request id and the resource's role."""

    def __init__(self, request_id: str) -> None:
        self._base = f"{C.LOCAL}report/{request_id}/"

    def uuid(self, part: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, self._base + part))

    def urn(self, part: str) -> str:
        return _urn(self.uuid(part))


def _urn(resource_id: str) -> str:
    return f"urn:uuid:{resource_id}"


def _instant(now: datetime | None) -> str:
    """A FHIR ``instant`` (UTC, seconds); a naive ``now`` is taken as UTC."""
    at = now or datetime.now(timezone.utc)
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _coding(system: str, code: C.Code) -> Json:
    return {"system": system, "code": code.code, "display": code.display}


def _concept(system: str, code: C.Code | None, text: str) -> Json:
    """A CodeableConcept; text only when there is no code."""
    out: Json = {"text": text}
    if code is not None:
        out["coding"] = [_coding(system, code)]
    return out


def _diagnostic_report(
    report: ReportResponse, rid: str, at: str, results: list[Json], device_ref: Json
) -> Json:
    out: Json = {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "text": {"status": "generated", "div": _narrative(report)},
        "extension": [{"url": C.DEVICE_EXTENSION, "valueReference": device_ref}],
        "identifier": [{"system": C.REQUEST_ID_SYSTEM, "value": report.request_id}],
        "status": "preliminary",
        "category": [_concept(C.V2_0074, C.RADIOLOGY, C.RADIOLOGY.display)],
        "code": _concept(C.LOINC, C.REPORT_CODE, "Chest X-ray report (machine-generated)"),
        "issued": at,
    }
    if results:
        out["result"] = results
    conclusion = (report.impression or "").strip() or report.report.strip()
    if conclusion:
        out["conclusion"] = conclusion
    if report.report.strip():
        data = base64.b64encode(report.report.encode("utf-8")).decode("ascii")
        form = {"contentType": "text/plain", "language": "en", "data": data, "title": "Report"}
        out["presentedForm"] = [form]
    return out


def _narrative(report: ReportResponse) -> str:
    """XHTML narrative: the disclaimer, the model and the report text."""
    m = report.model
    parts = [
        f"<p><b>{html.escape(report.disclaimer)}</b></p>",
        f"<p>Model: {html.escape(m.name)} {html.escape(m.version)}</p>",
    ]
    if report.report.strip():
        parts.append(f"<p>{html.escape(report.report.strip())}</p>")
    return f'<div xmlns="http://www.w3.org/1999/xhtml">{"".join(parts)}</div>'


def _stated(labels: dict[str, LabelState]) -> list[tuple[str, int]]:
    """(label, CheXpert code) of the non-blank labels, strongest first, then label order."""
    found = [(name, state) for name, state in labels.items() if state.code is not None]
    found.sort(key=lambda f: (-f[1].rank, CHEXPERT_LABELS.index(f[0])))
    return [(name, state.code) for name, state in found if state.code is not None]


def _finding(name: str) -> Json:
    return _concept(C.SNOMED, C.FINDING_SNOMED.get(name), name)


def _state(code: int) -> Json:
    value = C.STATE_VALUE[code]
    return _concept(C.SNOMED, value, value.display)


def _observation(sentence: SentenceOut, oid: str, at: str, device_ref: Json) -> Json:
    stated = _stated(label_sentence(sentence.text))
    out: Json = {
        "resourceType": "Observation",
        "id": oid,
        "status": "preliminary",
        "category": [_concept(C.OBS_CATEGORY, C.IMAGING, C.IMAGING.display)],
        "issued": at,
        "device": device_ref,
        "note": [{"text": sentence.text}],
    }
    if stated:
        out["code"] = _finding(stated[0][0])
        out["valueCodeableConcept"] = _state(stated[0][1])
    else:
        out["code"] = _concept(C.LOINC, C.NARRATIVE_CODE, C.NARRATIVE_CODE.display)
        out["valueString"] = sentence.text
    if sentence.anatomy:
        out["bodySite"] = _body_site(sentence.anatomy[0])
    extra = [{"code": _finding(n), "valueCodeableConcept": _state(s)} for n, s in stated[1:]]
    out["component"] = [*extra, *_grounding_components(sentence)]
    return out


def _body_site(node: AnatomyNodeOut) -> Json:
    """SNOMED CT where a code is known, always the graph's node id, the path as text."""
    coding = [{"system": C.ANATOMY_SYSTEM, "code": str(node.id), "display": node.name}]
    snomed = C.ANATOMY_SNOMED.get(node.name)
    if snomed is not None:
        coding.insert(0, _coding(C.SNOMED, snomed))
    return {"coding": coding, "text": " > ".join(node.path) if node.path else node.name}


def _local(code: str, display: str) -> Json:
    return {"coding": [{"system": C.COMPONENT_SYSTEM, "code": code, "display": display}]}


def _grounding_components(sentence: SentenceOut) -> list[Json]:
    """Box corners (original-image pixels, end-exclusive) and the model's confidence."""
    box = sentence.box
    corners = {"x0": box.x0, "y0": box.y0, "x1": box.x1, "y1": box.y1}
    out: list[Json] = [
        {"code": _local(f"box-{k}", f"Box {k} (px, end-exclusive)"), "valueInteger": v}
        for k, v in corners.items()
    ]
    value = round(sentence.confidence, 4)
    confidence = {"value": value, "unit": "1", "system": C.UCUM, "code": "1"}
    out.append({"code": _local("confidence", "Model confidence"), "valueQuantity": confidence})
    return out


def _device(model: ModelRef, did: str, disclaimer: str) -> Json:
    out: Json = {
        "resourceType": "Device",
        "id": did,
        "deviceName": [{"name": model.name, "type": "model-name"}],
        "type": {"text": "Chest X-ray report generation model (research software)"},
        "note": [{"text": disclaimer}],
    }
    if model.weights_sha256:
        out["identifier"] = [{"system": C.WEIGHTS_SYSTEM, "value": model.weights_sha256}]
    if model.version:
        out["version"] = [{"value": model.version}]
    return out


def _provenance(ids: _Ids, at: str, targets: list[Json], device_ref: Json) -> Json:
    agent = {"type": _concept(C.PROVENANCE_PARTICIPANT, C.AUTHOR, C.AUTHOR.display)}
    agent["who"] = device_ref
    return {
        "resourceType": "Provenance",
        "id": ids.uuid("provenance"),
        "target": targets,
        "recorded": at,
        "agent": [agent],
    }
