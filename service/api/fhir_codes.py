"""Code tables of the FHIR export (``service.api.fhir``); documented in ``docs/CODES.md``.

Only codes checked against published SNOMED CT / LOINC use are listed; a ``None`` entry is sent
as text only (``CodeableConcept.text``), never with a guessed code.
"""

from __future__ import annotations

from typing import NamedTuple

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"  # diagnostic service section
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
PROVENANCE_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"

# Project-local identifiers (stable URIs, not fetchable pages; like the problem ``type`` URIs).
LOCAL = "https://cxr.example/fhir/"
COMPONENT_SYSTEM = LOCAL + "CodeSystem/grounding"  # codes of the per-sentence components
DEVICE_EXTENSION = LOCAL + "StructureDefinition/generated-by-device"
REQUEST_ID_SYSTEM = LOCAL + "sid/request-id"
WEIGHTS_SYSTEM = LOCAL + "sid/weights-sha256"
ANATOMY_SYSTEM = LOCAL + "CodeSystem/ssacl-anatomy"  # node ids 0..31 of the anatomy graph


class Code(NamedTuple):
    code: str
    display: str


#: The report: LOINC "XR Chest Single view" (the model reads one frontal image; 36643-5 is the
#: two-view study and would misstate what was read).
REPORT_CODE = Code("36554-4", "XR Chest Single view")
#: A sentence that states no CheXpert finding: LOINC "Radiology Study observation (narrative)".
NARRATIVE_CODE = Code("18782-3", "Radiology Study observation (narrative)")
RADIOLOGY = Code("RAD", "Radiology")
IMAGING = Code("imaging", "Imaging")
AUTHOR = Code("author", "Author")

#: CheXpert label state (1 / 0 / -1) -> SNOMED CT qualifier value.
STATE_VALUE: dict[int, Code] = {
    1: Code("52101004", "Present"),
    0: Code("2667000", "Absent"),
    -1: Code("82334004", "Indeterminate"),
}

#: The 14 CheXpert labels (``anatomy.CHEXPERT_LABELS`` order) -> SNOMED CT, None = text only.
FINDING_SNOMED: dict[str, Code | None] = {
    "No Finding": None,
    "Enlarged Cardiomediastinum": None,
    "Cardiomegaly": Code("8186001", "Cardiomegaly"),
    "Lung Opacity": None,
    "Lung Lesion": None,
    "Edema": Code("19242006", "Pulmonary edema"),
    "Consolidation": Code("95436008", "Lung consolidation"),
    "Pneumonia": Code("233604007", "Pneumonia"),
    "Atelectasis": Code("46621007", "Atelectasis"),
    "Pneumothorax": Code("36118008", "Pneumothorax"),
    "Pleural Effusion": Code("60046008", "Pleural effusion"),
    "Pleural Other": None,
    "Fracture": Code("125605004", "Fracture of bone"),
    "Support Devices": None,
}

#: The 32 anatomy nodes (``anatomy.NODE_NAMES`` order) -> SNOMED CT body structure, None = text.
#: Radiological lung zones, hila, costophrenic angles, hemidiaphragms, the upper mediastinum and
#: the cavoatrial junction have no exact SNOMED CT concept we are sure of.
ANATOMY_SNOMED: dict[str, Code | None] = {
    "chest": Code("51185008", "Thoracic structure"),
    "lungs": Code("39607008", "Lung structure"),
    "mediastinum": Code("72410000", "Mediastinal structure"),
    "skeletal structures": None,
    "abdomen": Code("113345001", "Abdominal structure"),
    "right lung": Code("3341006", "Right lung structure"),
    "left lung": Code("44029006", "Left lung structure"),
    "right upper lung zone": None,
    "right mid lung zone": None,
    "right lower lung zone": None,
    "right hilar structures": None,
    "right apical zone": None,
    "right costophrenic angle": None,
    "right hemidiaphragm": None,
    "left upper lung zone": None,
    "left mid lung zone": None,
    "left lower lung zone": None,
    "left hilar structures": None,
    "left apical zone": None,
    "left costophrenic angle": None,
    "left hemidiaphragm": None,
    "trachea": Code("44567001", "Tracheal structure"),
    "upper mediastinum": None,
    "aortic arch": Code("57034009", "Aortic arch structure"),
    "superior vena cava": None,
    "cardiac silhouette": Code("80891009", "Heart structure"),
    "carina": Code("28700002", "Structure of carina of trachea"),
    "right atrium": Code("73829009", "Right atrial structure"),
    "cavoatrial junction": None,
    "spine": Code("122495006", "Thoracic spine structure"),  # the spine a chest film shows
    "right clavicle": Code("720616002", "Bone structure of right clavicle"),
    "left clavicle": Code("720617006", "Bone structure of left clavicle"),
}
