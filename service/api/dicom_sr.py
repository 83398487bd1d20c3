"""A report as a DICOM Structured Report, for ``Accept: application/dicom`` on a DICOM input.

The body is a Comprehensive SR (Part 10, explicit VR little endian) holding a TID 1500
"Measurement Report" (built with highdicom) in the source image's study: same Study Instance
UID, the source as evidence and in the image library, a new series and instance. Its content:

- observation context: the model as device observer (TID 1004; UID derived from the weights);
- procedure reported: LOINC 36554-4 "XR Chest Single view";
- one TID 1410 measurement group per sentence: tracking identifier, the box as a closed
  POLYLINE rectangle on the source image (``[x0, y0, x1, y1)`` original pixels, DICOM's
  pixel-edge coordinates), the strongest stated CheXpert finding as ``Finding``, the deepest
  anatomy node as ``Finding Site``, the model as algorithm (TID 4019), its confidence, one
  qualitative evaluation per stated finding (the finding = Present / Absent / Indeterminate)
  and the sentence as text;
- TID 1500 row 12 "Qualitative Evaluations": the report text, the impression, the disclaimer.

Codes are in :mod:`service.api.sr_codes` (``docs/CODES.md``). The only patient and study
attributes are those an SR needs to join its study (:mod:`service.imaging.dicom_study`).
"""

from __future__ import annotations

from io import BytesIO

import highdicom as hd
import numpy as np
from highdicom.sr import RelationshipTypeValues as Rel
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from model_export.ssacl.anatomy import CHEXPERT_LABELS
from model_export.ssacl.text import LabelState, label_sentence
from service.api import sr_codes as C
from service.api.errors import NOT_ACCEPTABLE, ApiError
from service.api.schemas import ImageOut, ModelRef, ReportResponse, SentenceOut
from service.imaging.dicom_study import STUDY_KEYWORDS
from service.imaging.types import DecodedImage, DicomStudyRef

SR_MEDIA_TYPE = "application/dicom"
SERIES_DESCRIPTION = "Machine-generated report, research model: not for clinical use"
SERIES_NUMBER = 9901  # a high number keeps the SR's series apart from the acquired ones
#: What the SR references the source by; without them it cannot join the study.
REFERENCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID")
PERSON_NAMES = ("PatientName", "ReferringPhysicianName")


def _accepted(accept: str | None) -> dict[str, float]:
    """Media type -> q-value of an Accept header (lower-cased; a bad q-value counts as 0)."""
    out: dict[str, float] = {}
    for part in (accept or "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = next((p.split("=", 1)[1] for p in params if p.lower().startswith("q=")), "1")
        if media:
            try:
                out[media.lower()] = float(q)
            except ValueError:
                out[media.lower()] = 0.0
    return out


def wants_sr(accept: str | None) -> bool:
    """True when ``application/dicom`` is accepted (q > 0) and preferred at least as much as
    every other type the header lists."""
    types = _accepted(accept)
    q = types.pop(SR_MEDIA_TYPE, 0.0)
    return q > 0 and all(q >= other for other in types.values())


def sr_source(img: DecodedImage) -> DicomStudyRef:
    """The decoded input's study reference; 406 ``not-acceptable`` if it cannot have an SR."""
    if img.source != "dicom" or img.study is None:
        raise ApiError(
            NOT_ACCEPTABLE,
            f"a DICOM SR (Accept: {SR_MEDIA_TYPE}) needs a DICOM input to join its study; "
            f"this input is {img.source.upper()}: accept application/json or "
            "application/fhir+json instead",
        )
    missing = [k for k in REFERENCE_UIDS if not img.study.get(k)]
    if missing:
        raise ApiError(
            NOT_ACCEPTABLE,
            f"a DICOM SR needs the input's {', '.join(missing)} to reference it; "
            "this DICOM has none: accept application/json or application/fhir+json instead",
        )
    return img.study


def report_sr(report: ReportResponse, study: DicomStudyRef) -> bytes:
    """The report as DICOM Part 10 bytes (a Comprehensive SR, see the module docstring)."""
    buf = BytesIO()
    build_sr(report, study).save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def build_sr(report: ReportResponse, study: DicomStudyRef) -> hd.sr.ComprehensiveSR:
    """The SR dataset: TID 1500 content in the source's study, a new series and instance."""
    model = report.model
    algorithm = hd.sr.AlgorithmIdentification(
        name=model.name, version=model.version or "unknown", parameters=_weights(model)
    )
    groups = [_group(i, s, study, algorithm) for i, s in enumerate(report.sentences)]
    content = hd.sr.MeasurementReport(
        observation_context=_observation_context(model),
        procedure_reported=C.PROCEDURE,
        imaging_measurements=groups or [_image_group(study, algorithm)],
    )
    root = content[0]
    measurements_at = [i.name for i in root.ContentSequence].index(codes.DCM.ImagingMeasurements)
    root.ContentSequence.insert(measurements_at, _image_library(study, report.image))
    root.ContentSequence.append(_report_text(report))
    sr = hd.sr.ComprehensiveSR(
        evidence=[_evidence(study)],
        content=root,
        series_instance_uid=generate_uid(),
        series_number=SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        series_description=SERIES_DESCRIPTION,
        manufacturer_model_name=model.name[:64],
        software_versions=(model.version or "unknown")[:64],
        coding_schemes=[C.coding_scheme()],
    )
    for keyword in PERSON_NAMES:  # set here: highdicom's name check warns, quoting the name
        setattr(sr, keyword, study.get(keyword) or None)
    return sr


def _weights(model: ModelRef) -> list[str] | None:
    return [f"weights sha256 {model.weights_sha256}"] if model.weights_sha256 else None


def _evidence(study: DicomStudyRef) -> Dataset:
    """The source as highdicom evidence: its study attributes (empty when absent) and UIDs."""
    ds = Dataset()
    for keyword in (*STUDY_KEYWORDS, *REFERENCE_UIDS):
        value = None if keyword in PERSON_NAMES else study.get(keyword)
        setattr(ds, keyword, value or None)
    charset = study.get("SpecificCharacterSet")
    if charset:
        ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    return ds


def _observation_context(model: ModelRef) -> hd.sr.ObservationContext:
    """The model as the device observer; its UID is a hash of name, version and weights."""
    uid = generate_uid(entropy_srcs=[model.name, model.version, model.weights_sha256])
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=uid, name=model.name[:64], model_name=f"{model.name} {model.version}".strip()[:64]
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device
    )
    return hd.sr.ObservationContext(observer_device_context=observer)


def _source_image(study: DicomStudyRef) -> hd.sr.SourceImageForRegion:
    return hd.sr.SourceImageForRegion(
        referenced_sop_class_uid=str(study.get("SOPClassUID")),
        referenced_sop_instance_uid=str(study.get("SOPInstanceUID")),
    )


def stated_findings(text: str) -> list[tuple[str, int]]:
    """(CheXpert label, state 1 / 0 / -1) stated by a sentence: strongest first, then label
    order (the FHIR export's order, so both name the same finding first)."""
    found: list[tuple[str, LabelState]] = [
        (n, s) for n, s in label_sentence(text).items() if s.code is not None
    ]
    found.sort(key=lambda f: (-f[1].rank, CHEXPERT_LABELS.index(f[0])))
    return [(n, s.code) for n, s in found if s.code is not None]


def _group(
    index: int,
    sentence: SentenceOut,
    study: DicomStudyRef,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """TID 1410 for one sentence: its box on the source, finding, site, evaluations, text."""
    stated = stated_findings(sentence.text)
    b = sentence.box
    rectangle = [[b.x0, b.y0], [b.x1, b.y0], [b.x1, b.y1], [b.x0, b.y1], [b.x0, b.y0]]
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.asarray(rectangle, dtype=np.float32),
        source_image=_source_image(study),
    )
    node = sentence.anatomy[0] if sentence.anatomy else None
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(), identifier=f"Sentence {index + 1}"
        ),
        referenced_region=region,
        finding_type=C.finding_code(stated[0][0]) if stated else None,
        finding_sites=[hd.sr.FindingSite(C.anatomy_code(node.id, node.name))] if node else None,
        algorithm_id=algorithm,
        measurements=[_confidence(sentence.confidence)],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(C.finding_code(n), C.STATE_VALUE[s]) for n, s in stated
        ]
        or None,
    )
    if sentence.text.strip():  # TID 1410 qualitative evaluations may have text answers
        group[0].ContentSequence.append(_text(C.NARRATIVE, sentence.text.strip()))
    return group


def _image_group(
    study: DicomStudyRef, algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 on the whole image, for a report without sentences (TID 1500 needs a group)."""
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="Report"),
        algorithm_id=algorithm,
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(
                referenced_sop_class_uid=str(study.get("SOPClassUID")),
                referenced_sop_instance_uid=str(study.get("SOPInstanceUID")),
            )
        ],
    )


def _confidence(value: float) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=C.CONFIDENCE, value=round(value, 4), unit=C.NO_UNITS)


def _text(name: Code, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=Rel.CONTAINS)


def _image_library(study: DicomStudyRef, image: ImageOut) -> hd.sr.ContainerContentItem:
    """TID 1600 with the source image alone, described by its size (the SCOORDs' frame)."""
    entry = hd.sr.ImageContentItem(
        name=C.SOURCE,
        referenced_sop_class_uid=str(study.get("SOPClassUID")),
        referenced_sop_instance_uid=str(study.get("SOPInstanceUID")),
        relationship_type=Rel.CONTAINS,
    )
    size = [
        hd.sr.NumContentItem(
            name=name, value=value, unit=C.PIXELS, relationship_type=Rel.HAS_ACQ_CONTEXT
        )
        for name, value in ((C.PIXEL_ROWS, image.height), (C.PIXEL_COLUMNS, image.width))
    ]
    group = hd.sr.ContainerContentItem(name=C.IMAGE_LIBRARY_GROUP, relationship_type=Rel.CONTAINS)
    group.ContentSequence = hd.sr.ContentSequence([*size, entry])
    library = hd.sr.ContainerContentItem(name=C.IMAGE_LIBRARY, relationship_type=Rel.CONTAINS)
    library.ContentSequence = hd.sr.ContentSequence([group])
    return library


def _report_text(report: ReportResponse) -> hd.sr.ContainerContentItem:
    """TID 1500 row 12: the report text, the impression and the disclaimer as TEXT items."""
    items = []
    if report.report.strip():
        items.append(_text(C.NARRATIVE, report.report.strip()))
    if (report.impression or "").strip():
        items.append(_text(C.IMPRESSION, (report.impression or "").strip()))
    items.append(_text(C.COMMENT, report.disclaimer))
    container = hd.sr.ContainerContentItem(
        name=C.QUALITATIVE_EVALUATIONS, relationship_type=Rel.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container
