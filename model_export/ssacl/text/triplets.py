"""ASG-style (region, finding, existence) triplets from report text (pure Python).

Per sentence: one triplet per mentioned CheXpert finding and anatomy node it grounds to
(``anatomy_parser``), with existence from the labeler state (positive -> "present", negative
-> "absent", uncertain -> "uncertain"). A sentence that names anatomy but no finding ("The
lungs are well expanded.") or states normality ("No acute cardiopulmonary abnormality.") gives
finding "normal", region = the named anatomy or "chest". Sentences with neither give none.
"""

from __future__ import annotations

from dataclasses import dataclass

from model_export.ssacl import anatomy
from model_export.ssacl.text.anatomy_parser import named_anatomy, sentence_anatomy
from model_export.ssacl.text.labeler import NO_FINDING, LabelState, label_sentence
from model_export.ssacl.text.sentences import split_sentences

NORMAL = "normal"
EXISTENCE: dict[LabelState, str] = {
    LabelState.POSITIVE: "present",
    LabelState.NEGATIVE: "absent",
    LabelState.UNCERTAIN: "uncertain",
}


@dataclass(frozen=True)
class Triplet:
    """One grounded statement of a report sentence."""

    sentence: str
    region: str  # anatomy node name (``anatomy.NODE_NAMES``)
    finding: str  # CheXpert finding name or "normal"
    existence: str  # "present" | "absent" | "uncertain"


def sentence_triplets(sentence: str) -> list[Triplet]:
    """Triplets of one sentence, findings in ``CHEXPERT_LABELS`` order, regions by node id."""
    labels = label_sentence(sentence)
    out: list[Triplet] = []
    for finding in anatomy.FINDINGS:
        state = labels[finding]
        if state is LabelState.BLANK:
            continue
        for node in sentence_anatomy(sentence, [finding]):
            out.append(Triplet(sentence, anatomy.NODE_NAMES[node], finding, EXISTENCE[state]))
    if out:
        return out
    regions = named_anatomy(sentence)
    if not regions and labels[NO_FINDING] is LabelState.POSITIVE:
        regions = (anatomy.node_id("chest"),)
    return [
        Triplet(sentence, anatomy.NODE_NAMES[node], NORMAL, "present") for node in sorted(regions)
    ]


def extract_triplets(report: str) -> list[Triplet]:
    """Triplets of every sentence of a report, in sentence order."""
    return [t for s in split_sentences(report) for t in sentence_triplets(s)]
