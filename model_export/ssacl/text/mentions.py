"""Anatomy mentions in report text: radiology phrases -> anatomy node ids.

Longest phrase wins; a phrase may name several nodes ("bibasilar" -> both lower zones).
Patterns are regular expressions on lower-case text. Used by ``anatomy_parser``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from model_export.ssacl.anatomy import NODE_NAMES

_BY_NAME = {name: i for i, name in enumerate(NODE_NAMES)}

_R, _L = "right", "left"
_SIDES = {"right": (_R,), "left": (_L,)}


def _sided(side: str, zone: str) -> str:
    return f"{side} {zone}"


def _zone_patterns() -> list[tuple[str, tuple[str, ...]]]:
    zones = {
        "upper lung zone": [r"upper (?:lung )?(?:lobe|zone|lung|field)s?", r"upper lobes?"],
        "mid lung zone": [
            r"mid(?:dle)? (?:lung )?(?:lobe|zone|lung|field)s?",
            r"mid ?lung",
            r"perihilar",
        ],
        "lower lung zone": [
            r"lower (?:lung )?(?:lobe|zone|lung|field)s?",
            r"(?:lung )?base",
            r"basilar",
            r"basal",
            r"infrahilar",
        ],
        "hilar structures": [r"hil(?:um|ar|a)(?: structures?| region)?"],
        "apical zone": [r"ap(?:ex|ical|ices)(?: zone| region)?", r"lung apex"],
        "costophrenic angle": [
            r"costophrenic (?:angle|sulcus|recess)s?",
            r"cp angles?",
            r"costophrenic",
        ],
        "hemidiaphragm": [r"hemidiaphragms?", r"diaphragm"],
        "lung": [r"lung", r"hemithorax", r"chest"],
    }
    out: list[tuple[str, tuple[str, ...]]] = []
    for zone, pats in zones.items():
        for pat in pats:
            for side in ("right", "left"):
                out.append((rf"{side} {pat}", (_sided(side, zone),)))
            both = (_sided("right", zone), _sided("left", zone))
            out.append((rf"(?:bilateral|both|bi) ?{pat}", both))
    return out


_EXTRA: list[tuple[str, tuple[str, ...]]] = [
    (r"\br ?u ?l\b", ("right upper lung zone",)),
    (r"\br ?m ?l\b", ("right mid lung zone",)),
    (r"\br ?l ?l\b", ("right lower lung zone",)),
    (r"\bl ?u ?l\b", ("left upper lung zone",)),
    (r"\bl ?l ?l\b", ("left lower lung zone",)),
    (r"lingula(?:r)?", ("left mid lung zone",)),
    (
        r"bibasilar|bibasal|bibasally|(?:lung )?bases",
        ("right lower lung zone", "left lower lung zone"),
    ),
    (r"biapical|(?:lung )?apices", ("right apical zone", "left apical zone")),
    (r"hila|hilar", ("right hilar structures", "left hilar structures")),
    (
        r"costophrenic angles|cp angles|costophrenic sulci",
        ("right costophrenic angle", "left costophrenic angle"),
    ),
    (r"hemidiaphragms|diaphragms?", ("right hemidiaphragm", "left hemidiaphragm")),
    (r"clavicles", ("right clavicle", "left clavicle")),
    (r"right clavic(?:le|ular)", ("right clavicle",)),
    (r"left clavic(?:le|ular)", ("left clavicle",)),
    (r"lungs?|lung fields?|lung volumes|pulmonary|pleural spaces?", ("lungs",)),
    (r"heart|cardiac(?: silhouette| contour| size)?|cardiomegaly", ("cardiac silhouette",)),
    (
        r"cardiomediastinal(?: silhouette| contours?)?|mediastin(?:um|al)(?: contours?)?",
        ("mediastinum",),
    ),
    (r"upper mediastinum|superior mediastinum|paratracheal", ("upper mediastinum",)),
    (r"trachea|tracheal", ("trachea",)),
    (r"carina", ("carina",)),
    (r"aort(?:a|ic)(?: arch| knob| knuckle)?|tortuous aorta", ("aortic arch",)),
    (r"superior vena cava|svc", ("superior vena cava",)),
    (r"right atri(?:um|al)", ("right atrium",)),
    (r"cavoatrial(?: junction)?|cavo-atrial", ("cavoatrial junction",)),
    (r"(?:thoracic )?spine|vertebra(?:e|l)?(?: bod(?:y|ies))?|spinal|spondyl\w*", ("spine",)),
    (r"osseous|bony|bones|skeletal|ribs?|skeleton", ("skeletal structures",)),
    (r"(?:upper )?abdomen|abdominal|subdiaphragmatic|bowel|stomach|gastric|free air", ("abdomen",)),
]


@lru_cache(maxsize=1)
def _synonym_regexes() -> tuple[tuple[re.Pattern[str], tuple[int, ...]], ...]:
    pairs = _zone_patterns() + _EXTRA
    compiled = [
        (re.compile(rf"\b(?:{pat})\b"), tuple(_BY_NAME[n] for n in names)) for pat, names in pairs
    ]
    return tuple(compiled)


@dataclass(frozen=True)
class Mention:
    """An anatomy phrase found in text: character span and the node ids it names."""

    start: int
    end: int
    text: str
    node_ids: tuple[int, ...]


def find_mentions(text: str) -> list[Mention]:
    """All non-overlapping anatomy phrases in ``text``, longest match first, in text order."""
    low = text.lower()
    found: list[Mention] = []
    for rx, ids in _synonym_regexes():
        for m in rx.finditer(low):
            found.append(Mention(m.start(), m.end(), text[m.start() : m.end()], ids))
    found.sort(key=lambda m: (-(m.end - m.start), m.start))
    taken: list[Mention] = []
    for cand in found:
        if all(cand.end <= t.start or cand.start >= t.end for t in taken):
            taken.append(cand)
    return sorted(taken, key=lambda m: m.start)
