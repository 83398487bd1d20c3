"""Sentence -> anatomy node ids of the SS-ACL graph (pure Python).

Two sources, combined and reduced to the deepest nodes (``anatomy.deepest``):

1. Anatomy the sentence names, via ``mentions.find_mentions`` after normalising laterality:
   "right-sided" -> "right", side abbreviations before an anatomy word ("R lung", "lt. base"
   -> "right lung", "left base"), coordinated zones ("right upper and lower lobes" -> both right
   zones, "right and left lower lobes" -> both lower zones), and zone words without a side
   ("lower lobe", "base", "apex") take the side(s) named elsewhere in the sentence, or both.
2. Default anatomy of the sentence's findings (``FINDING_DEFAULTS``), resolved to the sides the
   sentence names ("right pleural effusion" -> right costophrenic angle, "bilateral effusions"
   -> both): effusion -> costophrenic angles (plus the lower lung zone when moderate or
   large), pneumothorax -> apical zones (where air collects on an upright film),
   cardiomegaly -> cardiac silhouette, fracture -> skeletal structures, support devices ->
   the node of the named device (ET tube -> trachea, central line -> superior vena cava,
   gastric tube -> abdomen, pacemaker -> right atrium, sternotomy wires -> skeletal
   structures) else mediastinum, lung findings -> the named lung(s) or "lungs". A default is
   added only when no named node already lies at or below it.

Sides come from the whole sentence: "right effusion and left atelectasis" grounds the
effusion to both costophrenic angles (a known limit).

A finding not in the table falls back to its level-2 roots in ``anatomy.PATHOLOGY_TO_ROOTS``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from model_export.ssacl import anatomy
from model_export.ssacl.text.labeler import NO_FINDING, LabelState, label_sentence
from model_export.ssacl.text.mentions import find_mentions

RIGHT, LEFT = "right", "left"
#: Finding -> default node (names; "{side}" is replaced by right/left, both when none named).
FINDING_DEFAULTS: dict[str, str] = {
    "Pleural Effusion": "{side} costophrenic angle",
    "Pneumothorax": "{side} apical zone",
    "Cardiomegaly": "cardiac silhouette",
    "Enlarged Cardiomediastinum": "mediastinum",
    "Support Devices": "mediastinum",
    "Fracture": "skeletal structures",
    "Edema": "lungs",
    "Lung Opacity": "{side} lung",
    "Lung Lesion": "{side} lung",
    "Consolidation": "{side} lung",
    "Pneumonia": "{side} lung",
    "Atelectasis": "{side} lung",
    "Pleural Other": "{side} lung",
}

#: Device phrase -> the node the device occupies (Support Devices default when named).
DEVICE_DEFAULTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(?:endotracheal|tracheostomy|et|ett)\b(?: tube)?"), "trachea"),
    (
        re.compile(r"\b(?:central venous|venous|picc|jugular|ij|subclavian|port)\b|\bcatheter"),
        "superior vena cava",
    ),
    (
        re.compile(r"\b(?:nasogastric|orogastric|enteric|feeding|ng|og|gastric|dobhoff)\b"),
        "abdomen",
    ),
    (re.compile(r"\b(?:pacemaker|pacer|pacing|a?icd|defibrillator)"), "right atrium"),
    (re.compile(r"\bsternotomy|\bsternal wires"), "skeletal structures"),
)
_ZONE = r"(?:upper|mid|middle|lower)"
_LOBE = r"(?:lobes?|zones?|lungs?|lung zones?|lung fields?)"
_Repl = str | Callable[[re.Match[str]], str]
#: Words a side abbreviation ("R", "Lt.") may stand before and still mean a side ("2 L nasal
#: cannula" stays litres).
_SIDE_NOUNS = (
    r"(?:lung|upper|mid|middle|lower|base|basilar|apex|apical|hil(?:um|ar)|hemithorax|"
    r"hemidiaphragm|pleural|effusion|costophrenic|cp|clavicle|side|sided|lobe|chest|"
    r"pneumothorax)"
)
_SIDED_PHRASES: tuple[tuple[re.Pattern[str], _Repl], ...] = (
    (re.compile(rf"\b(?:rt|r)(?:\. ?| )(?={_SIDE_NOUNS}\b)"), "right "),  # "R lung", "rt. base"
    (re.compile(rf"\b(?:lt|l)(?:\. ?| )(?={_SIDE_NOUNS}\b)"), "left "),
    (re.compile(r"\b(right|left)[- ]sided\b"), r"\1"),
    # "right upper and lower lobes" -> "right upper lobes and right lower lobes";
    # "right upper and left lower lobes" -> "right upper lobes and left lower lobes"
    (
        re.compile(
            rf"\b(right|left|bilateral) ({_ZONE}) ?(?:and|&|to|/|,) ?"
            rf"(right |left )?({_ZONE}) ({_LOBE})\b"
        ),
        lambda m: f"{m[1]} {m[2]} {m[5]} and {(m[3] or m[1] + ' ').strip()} {m[4]} {m[5]}",
    ),
    # "right and left lower lobes" / "left and right bases" -> both sides
    (re.compile(r"\b(?:right|left) and (?:right|left) "), "bilateral "),
    (re.compile(r"\bretrocardiac\b"), "left lower lobe"),
    (re.compile(r"\bsuprahilar\b"), "upper zone"),  # above the hilum
    (re.compile(r"\b(?:para|juxta)hilar\b"), "perihilar"),  # the graph: perihilar = mid zone
)
#: Zone words without a side -> zone node name suffix.
_UNSIDED_ZONES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bupper (?:lung )?(?:lobe|zone|lung)s?\b|\bupper lungs?\b"), "upper lung zone"),
    (
        re.compile(r"\b(?:mid|middle) (?:lung )?(?:lobe|zone)s?\b|\bmid ?lungs?\b|\bperihilar\b"),
        "mid lung zone",  # perihilar = mid zone, as in anatomy.py
    ),
    (
        re.compile(r"\blower (?:lung )?(?:lobe|zone|lung)s?\b|\b(?:lung )?bases?\b|\bbasilar\b"),
        "lower lung zone",
    ),
    (re.compile(r"\bap(?:ex|ical|ices)\b"), "apical zone"),
    (re.compile(r"\bhil(?:um|ar|a)\b"), "hilar structures"),
    (re.compile(r"\bcostophrenic\b|\bcp angles?\b"), "costophrenic angle"),
)


def sentence_sides(text: str) -> tuple[str, ...]:
    """Sides a sentence names: ('right',), ('left',), ('right', 'left') or ()."""
    low = _normalise(text)  # idempotent: the parser passes normalised text too
    both = re.search(r"\b(?:bilateral\w*|both|bi(?:basilar|apical|basal|lateral)\w*)\b", low)
    right = both or re.search(r"\bright\b", low)
    left = both or re.search(r"\bleft\b", low)
    return tuple(s for s, hit in ((RIGHT, right), (LEFT, left)) if hit)


def _normalise(text: str) -> str:
    low = " ".join(text.lower().split())
    for rx, repl in _SIDED_PHRASES:
        low = rx.sub(repl, low)
    return low


def _unsided_zone_nodes(
    text: str, taken: list[tuple[int, int]], sides: tuple[str, ...]
) -> list[int]:
    """Nodes for zone words that no sided mention covers, on the sentence's sides."""
    out: list[int] = []
    for rx, zone in _UNSIDED_ZONES:
        for m in rx.finditer(text):
            if any(s <= m.start() < e for s, e in taken):
                continue
            zone_sides = sides or (RIGHT, LEFT)
            if zone == "mid lung zone" and "middle" in m.group(0):
                zone_sides = (RIGHT,)  # only the right lung has a middle lobe
            out.extend(anatomy.node_id(f"{s} {zone}") for s in zone_sides)
    return out


@lru_cache(maxsize=4096)
def named_anatomy(sentence: str) -> tuple[int, ...]:
    """Node ids the sentence names explicitly (deepest only, in text order); cached by text
    (the grounding and the coherence check both parse every generated sentence)."""
    text = _normalise(sentence)
    mentions = find_mentions(text)
    ids = [i for m in mentions for i in m.node_ids]
    ids += _unsided_zone_nodes(text, [(m.start, m.end) for m in mentions], sentence_sides(text))
    return anatomy.deepest(ids)


def device_anatomy(sentence: str) -> tuple[int, ...]:
    """Nodes of the devices a sentence names (ET tube -> trachea, CVC -> SVC, ...)."""
    low = sentence.lower()
    names = dict.fromkeys(node for rx, node in DEVICE_DEFAULTS if rx.search(low))
    return tuple(anatomy.node_id(n) for n in names)


def finding_anatomy(finding: str, sides: tuple[str, ...] = ()) -> tuple[int, ...]:
    """Default node ids of a CheXpert finding on the given sides (both sides when none)."""
    if finding in FINDING_DEFAULTS:
        name = FINDING_DEFAULTS[finding]
        if "{side}" not in name:
            return (anatomy.node_id(name),)
        if not sides and name == "{side} lung":
            return (anatomy.node_id("lungs"),)
        return tuple(anatomy.node_id(name.format(side=s)) for s in (sides or (RIGHT, LEFT)))
    roots = anatomy.PATHOLOGY_TO_ROOTS.get(finding, ())
    return tuple(anatomy.node_id(r) for r in roots)


_LARGE = re.compile(r"\b(?:moderate|large|massive|sizable)\b")


def _defaults(finding: str, sentence: str, sides: tuple[str, ...]) -> tuple[int, ...]:
    """Default nodes of a finding in this sentence: device-specific for Support Devices, the
    lower lung zone as well as the costophrenic angle for a moderate or large effusion."""
    defaults = finding_anatomy(finding, sides)
    if finding == "Support Devices":
        return device_anatomy(sentence) or defaults
    if finding == "Pleural Effusion" and _LARGE.search(sentence.lower()):
        zone = (anatomy.node_id(f"{s} lower lung zone") for s in (sides or (RIGHT, LEFT)))
        return defaults + tuple(zone)
    return defaults


def _covered(default: int, named: tuple[int, ...]) -> bool:
    """True when a named node is the default node or lies below it."""
    return any(n == default or default in anatomy.ancestors(n) for n in named)


def sentence_findings(sentence: str) -> list[str]:
    """CheXpert findings the sentence mentions (positive, negative or uncertain)."""
    labels = label_sentence(sentence)
    return [k for k, v in labels.items() if k != NO_FINDING and v is not LabelState.BLANK]


def sentence_anatomy(sentence: str, findings: list[str] | None = None) -> tuple[int, ...]:
    """Deepest anatomy node ids for a sentence, sorted ascending; () when it names none.

    Args:
        sentence: one sentence of a report.
        findings: CheXpert findings to ground (e.g. predicted entities); None labels the
            sentence with the rule-based labeler and uses every finding it mentions.
    """
    named = named_anatomy(sentence)
    if findings is None:
        findings = sentence_findings(sentence)
    sides = sentence_sides(_normalise(sentence))
    ids = list(named)
    for finding in findings:
        ids += [d for d in _defaults(finding, sentence, sides) if not _covered(d, named)]
    return tuple(sorted(anatomy.deepest(ids)))


def node_names(ids: tuple[int, ...] | list[int]) -> tuple[str, ...]:
    """Node names for node ids."""
    return tuple(anatomy.NODE_NAMES[i] for i in ids)
