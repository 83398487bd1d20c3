"""Code tables of the DICOM SR export (``service.api.dicom_sr``); documented in ``docs/CODES.md``.

The standard codes are those of the FHIR export (``service.api.fhir_codes``: SNOMED CT findings,
body structures and Present / Absent / Indeterminate; LOINC report and narrative codes), written
with DICOM's coding scheme designators. What has no standard code (CheXpert labels and anatomy
nodes the FHIR tables leave as text, the model's confidence) gets a code of the private scheme
``99SSACL`` (PS3.16 8.2: a "99" prefix marks a private designator), declared in the SR's
Coding Scheme Identification Sequence. No code is guessed.
"""

from __future__ import annotations

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from model_export.ssacl import anatomy
from service.api import fhir_codes as F

SCT = "SCT"  # SNOMED CT
LN = "LN"  # LOINC
DCM = "DCM"  # DICOM's own codes (PS3.16 Annex D)
UCUM = "UCUM"
UMLS = "UMLS"
PRIVATE = "99SSACL"  # project-local: CheXpert labels / anatomy nodes without SNOMED CT, confidence


def coding_scheme() -> CodingSchemeIdentificationItem:
    """The Coding Scheme Identification Sequence item that declares ``99SSACL``."""
    return CodingSchemeIdentificationItem(
        designator=PRIVATE,
        name="SSACL chest X-ray model: CheXpert labels, anatomy nodes, grounding",
        responsible_organization="ssacl-cxr project (research software)",
    )


#: TID 1500 "Procedure reported": LOINC "XR Chest Single view" (as the FHIR DiagnosticReport).
PROCEDURE = Code(F.REPORT_CODE.code, LN, F.REPORT_CODE.display)
#: Concept name of every sentence's text, and of the whole report in the report-level container.
NARRATIVE = Code(F.NARRATIVE_CODE.code, LN, F.NARRATIVE_CODE.display)
IMPRESSION: Code = codes.DCM.Impression  # 121073
COMMENT: Code = codes.DCM.Comment  # 121106, the disclaimer
#: TID 1500 row 12: the report-level container of the report text.
QUALITATIVE_EVALUATIONS = Code("C0034375", UMLS, "Qualitative Evaluations")
CONFIDENCE = Code("confidence", PRIVATE, "Model confidence")
NO_UNITS: Code = codes.UCUM.NoUnits  # "1"
SOURCE = Code("260753009", SCT, "Source")  # the image library entry of the source image
IMAGE_LIBRARY: Code = codes.DCM.ImageLibrary  # 111028
IMAGE_LIBRARY_GROUP: Code = codes.DCM.ImageLibraryGroup  # 126200
PIXEL_ROWS: Code = codes.DCM.PixelDataRows  # 110910
PIXEL_COLUMNS: Code = codes.DCM.PixelDataColumns  # 110911
PIXELS = Code("{pixels}", UCUM, "Pixels")

#: CheXpert label state (1 / 0 / -1) -> SNOMED CT Present / Absent / Indeterminate.
STATE_VALUE: dict[int, Code] = {k: Code(c.code, SCT, c.display) for k, c in F.STATE_VALUE.items()}


def finding_code(label: str) -> Code:
    """A CheXpert label: SNOMED CT where the FHIR table has it, else ``99SSACL chexpert-<i>``."""
    known = F.FINDING_SNOMED.get(label)
    if known is not None:
        return Code(known.code, SCT, known.display)
    return Code(f"chexpert-{anatomy.CHEXPERT_LABELS.index(label)}", PRIVATE, label)


def anatomy_code(node_id: int, name: str) -> Code:
    """An anatomy node: SNOMED CT body structure where known, else ``99SSACL anatomy-<id>``."""
    known = F.ANATOMY_SNOMED.get(name)
    if known is not None:
        return Code(known.code, SCT, known.display)
    return Code(f"anatomy-{node_id}", PRIVATE, name)
