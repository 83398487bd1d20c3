"""IU X-ray MeSH ``<major>`` tags -> CheXpert labels and lung locations (pure Python).

A tag is ``Term/qualifier/...``, e.g. ``Opacity/lung/base/left/mild``. The mapping below was
decided for this project (see docs/TEXT_TOOLS.md); it follows CheXpert's phrase conventions so
that it is comparable with the rule-based labeler: scarring and interstitial markings are Lung
Opacity, heart failure and congestion are Edema, pleural scarring/thickening is Pleural Other,
blunted costophrenic angles are Pleural Effusion, granulomas are Lung Lesion, indwelling
catheters, tubes, implanted devices, surgical instruments (clips, wires), stents and sutures are
Support Devices. Terms with no CheXpert counterpart (Calcinosis, Emphysema, Hypoinflation,
Thoracic Vertebrae/degenerative, Aorta/tortuous, ...) map to nothing.

The tags are an imperfect reference: they were assigned by human indexers from the report
text, at study level, without negation or uncertainty.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from model_export.ssacl.anatomy import CHEXPERT_LABELS, FINDINGS, node_id

#: Head term -> label for terms that map regardless of their qualifiers.
HEAD_TERMS: dict[str, str] = {
    "Cardiomegaly": "Cardiomegaly",
    "Opacity": "Lung Opacity",
    "Airspace Disease": "Lung Opacity",
    "Infiltrate": "Lung Opacity",
    "Lung Diseases, Interstitial": "Lung Opacity",
    "Nodule": "Lung Lesion",
    "Granulomatous Disease": "Lung Lesion",
    "Calcified Granuloma": "Lung Lesion",
    "Granuloma": "Lung Lesion",
    "Cavitation": "Lung Lesion",
    "Pulmonary Edema": "Edema",
    "Pulmonary Congestion": "Edema",
    "Heart Failure": "Edema",
    "Consolidation": "Consolidation",
    "Pneumonia": "Pneumonia",
    "Pulmonary Atelectasis": "Atelectasis",
    "Volume Loss": "Atelectasis",
    "Pneumothorax": "Pneumothorax",
    "Hydropneumothorax": "Pneumothorax",
    "Hemopneumothorax": "Pneumothorax",
    "Pleural Effusion": "Pleural Effusion",
    "Hemothorax": "Pleural Effusion",
    "Fractures, Bone": "Fracture",
    "Catheters, Indwelling": "Support Devices",
    "Tube, Inserted": "Support Devices",
    "Medical Device": "Support Devices",
    "Implanted Medical Device": "Support Devices",
    "Surgical Instruments": "Support Devices",
    "Stents": "Support Devices",
    "Sutures": "Support Devices",
}

#: (head term, qualifier that must be present ("" = none needed), qualifiers that must be
#: absent, label) for terms that map only with (or without) certain qualifiers.
QUALIFIED_TERMS: tuple[tuple[str, str, frozenset[str], str], ...] = (
    ("Cardiac Shadow", "enlarged", frozenset(), "Cardiomegaly"),
    ("Heart", "enlarged", frozenset(), "Cardiomegaly"),
    ("Mediastinum", "prominent", frozenset({"lymph nodes"}), "Enlarged Cardiomediastinum"),
    ("Mediastinum", "enlarged", frozenset({"lymph nodes"}), "Enlarged Cardiomediastinum"),
    ("Mediastinum", "widened", frozenset({"lymph nodes"}), "Enlarged Cardiomediastinum"),
    ("Density", "lung", frozenset(), "Lung Opacity"),
    ("Density", "retrocardiac", frozenset(), "Lung Opacity"),
    ("Markings", "interstitial", frozenset(), "Lung Opacity"),
    ("Markings", "reticular", frozenset(), "Lung Opacity"),
    ("Lung", "interstitial", frozenset(), "Lung Opacity"),
    ("Cicatrix", "pleura", frozenset(), "Pleural Other"),
    ("Cicatrix", "", frozenset({"pleura", "breast", "ribs", "skin"}), "Lung Opacity"),
    ("Thickening", "pleura", frozenset(), "Pleural Other"),
    ("Thickening", "bronchi", frozenset(), "Lung Opacity"),
    ("Thickening", "interstitial", frozenset(), "Lung Opacity"),
    ("Thickening", "bronchovascular", frozenset(), "Lung Opacity"),
    ("Calcinosis", "pleura", frozenset(), "Pleural Other"),
    ("Costophrenic Angle", "blunted", frozenset(), "Pleural Effusion"),
    ("Pleura", "blunted", frozenset(), "Pleural Effusion"),
    ("Mass", "", frozenset({"breast"}), "Lung Lesion"),
    # round (nodular) opacities/densities: CheXpert counts "nodular opacity" as a lung lesion
    ("Opacity", "round", frozenset(), "Lung Lesion"),
    ("Density", "round", frozenset(), "Lung Lesion"),
    ("Infiltrate", "round", frozenset(), "Lung Lesion"),
    ("Hydropneumothorax", "", frozenset(), "Pleural Effusion"),  # air and fluid
    ("Hemopneumothorax", "", frozenset(), "Pleural Effusion"),
)
NORMAL_TAG = "normal"
NO_INDEXING_TAG = "No Indexing"


def _terms(tag: str) -> list[str]:
    return [t.strip() for t in tag.split("/") if t.strip()]


def mesh_tag_labels(tag: str) -> tuple[str, ...]:
    """The CheXpert findings a MeSH tag maps to (often none; ``normal`` maps to none)."""
    terms = _terms(tag)
    if not terms:
        return ()
    head, quals = terms[0], {q.lower() for q in terms[1:]}
    out = [HEAD_TERMS[head]] if head in HEAD_TERMS else []
    for term, qual, absent, label in QUALIFIED_TERMS:
        wanted = not qual or qual in quals
        if head == term and wanted and not quals & absent and label not in out:
            out.append(label)
    return tuple(out)


def mesh_labels(tags: Iterable[str]) -> dict[str, int]:
    """Positive-only reference vector as a dict over the 14 CheXpert names (1 / 0).

    "No Finding" follows the CheXpert rule on the mapped tags (no finding other than Support
    Devices); ``mesh_normal`` gives the literal ``normal`` tag instead.
    """
    found = {lab for t in tags for lab in mesh_tag_labels(t)}
    out = {name: int(name in found) for name in CHEXPERT_LABELS}
    out[CHEXPERT_LABELS[0]] = int(not any(f in found for f in FINDINGS if f != "Support Devices"))
    return out


def mesh_normal(tags: Iterable[str]) -> bool:
    """True when the study carries the MeSH ``normal`` tag."""
    return any(t.strip() == NORMAL_TAG for t in tags)


# ------------------------------------------------------------------------- locations
_SIDES = {"right": ("right",), "left": ("left",), "bilateral": ("right", "left")}
#: Location qualifier -> zone name (prefixed with the side) and the sides it implies.
_ZONES: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "base": ("lower lung zone", None),
    "lower lobe": ("lower lung zone", None),
    "upper lobe": ("upper lung zone", None),
    "apex": ("apical zone", None),
    "middle lobe": ("mid lung zone", ("right",)),
    "lingula": ("mid lung zone", ("left",)),
    "hilum": ("hilar structures", None),
    "costophrenic angle": ("costophrenic angle", None),
    "retrocardiac": ("lower lung zone", ("left",)),
}


@dataclass(frozen=True)
class MeshLocation:
    """Where a tag puts its finding: per group, any of its node ids satisfies the group.

    ``groups`` has one entry per required side ("bilateral" requires both), each a tuple of
    acceptable node ids (a zone without a side accepts either side).
    """

    tag: str
    label: str
    groups: tuple[tuple[int, ...], ...]
    sides: tuple[str, ...]  # sides named by the tag (empty when none)


def mesh_locations(tag: str) -> tuple[MeshLocation, ...]:
    """The lung location a mapped tag names, once per label; () without side and zone."""
    return tuple(
        loc for label in mesh_tag_labels(tag) if (loc := _location(tag, label)) is not None
    )


def _location(tag: str, label: str) -> MeshLocation | None:
    quals = [q.lower() for q in _terms(tag)[1:]]
    sides: tuple[str, ...] = ()
    for q in quals:
        sides = _SIDES.get(q, sides)
    zone = next((_ZONES[q] for q in quals if q in _ZONES), None)
    if zone is None and not sides:
        return None
    name, implied = zone if zone else ("lung", None)
    sides = sides or implied or ()
    groups: tuple[tuple[int, ...], ...]
    if sides:
        groups = tuple((node_id(f"{s} {name}"),) for s in sides)
    else:  # a zone without a side: either side agrees
        groups = ((node_id(f"right {name}"), node_id(f"left {name}")),)
    return MeshLocation(tag, label, groups, sides)
