"""The DICOM code strings the service echoes (responses, warnings, errors): known codes only.

A code-string attribute is free text in the file: a Modality of ``JOHN DOE`` is as easy to
write as ``DX``. Only values from these fixed sets leave the decoder; anything else becomes
:data:`UNRECOGNISED`, so no element value of an upload is ever echoed.
"""

from __future__ import annotations

UNRECOGNISED = "unrecognised"  # a present value that is not a known code

# Modality (0008,0060): defined terms of PS3.3 C.7.3.1.1.1 for images (DR: in use, not defined)
MODALITIES = frozenset(
    {
        "CR", "DX", "DR", "RG", "OT", "CT", "MR", "US", "NM", "PT", "MG", "XA", "RF",
        "IO", "PX", "XC", "ES", "OP", "SM", "GM", "OPT", "BMD", "DOC", "SR", "SEG",
    }
)  # fmt: skip
# Body Part Examined (0018,0015): common terms of PS3.16 Annex L
BODY_PARTS = frozenset(
    {
        "CHEST", "THORAX", "CHESTABDOMEN", "CHEST_TO_PELVIS", "ABDOMEN", "PELVIS", "HEAD",
        "SKULL", "NECK", "SPINE", "CSPINE", "TSPINE", "LSPINE", "SSPINE", "HEART", "RIB",
        "STERNUM", "CLAVICLE", "SHOULDER", "ARM", "HUMERUS", "ELBOW", "FOREARM", "WRIST",
        "HAND", "FINGER", "HIP", "LEG", "FEMUR", "KNEE", "TIBIA", "ANKLE", "FOOT", "TOE",
        "EXTREMITY", "BREAST", "WHOLEBODY",
    }
)  # fmt: skip
# View Position (0018,5101): defined terms of PS3.3 C.8.11.5.1.1, plus the common LATERAL
VIEW_POSITIONS = frozenset({"AP", "PA", "LL", "RL", "RLD", "LLD", "RLO", "LLO", "LATERAL", "LAT"})
# Photometric Interpretation (0028,0004): PS3.3 C.7.6.3.1.2
PHOTOMETRIC = frozenset(
    {
        "MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422",
        "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "HSV", "ARGB", "CMYK",
    }
)  # fmt: skip


def known(value: str | None, codes: frozenset[str]) -> str | None:
    """``value`` when it is one of ``codes``; None when absent; else :data:`UNRECOGNISED`."""
    if value is None:
        return None
    return value if value in codes else UNRECOGNISED
