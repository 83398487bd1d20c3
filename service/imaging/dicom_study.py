"""The few source attributes a DICOM Structured Report needs to join the image's study.

These are identifying (patient and study attributes): they are read only into
:class:`DicomStudyRef`, which the SR output (``service.api.dicom_sr``) alone uses. Nothing here
is logged or returned in JSON, and a value that cannot be read is left out, never reported.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from service.imaging.types import DicomStudyRef

#: Patient / study attributes copied into the SR (PS3.3 Patient and General Study modules).
STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
#: What the SR references the image by, and how the source's strings are encoded.
REFERENCE_KEYWORDS = ("SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID", "SpecificCharacterSet")


def _value(ds: Dataset, keyword: str) -> str | None:
    """The element's value as one string (multiple values joined by ``\\``), None if unreadable."""
    try:
        if keyword not in ds:
            return None
        value = ds[keyword].value
        if value is None:
            return ""
        if isinstance(value, (list, tuple, MultiValue)):
            return "\\".join(str(v) for v in value)
        return str(value)
    except Exception:
        return None


def study_ref(ds: Dataset) -> DicomStudyRef:
    """The source's study and reference attributes that are present and readable."""
    pairs = ((k, _value(ds, k)) for k in (*STUDY_KEYWORDS, *REFERENCE_KEYWORDS))
    return DicomStudyRef(tuple((k, v) for k, v in pairs if v is not None))
