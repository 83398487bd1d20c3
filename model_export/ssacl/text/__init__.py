"""Report-text tools (pure Python, no torch): sentence splitting, a rule-based CheXpert-14
labeler, sentence -> anatomy grounding and ASG-style triplets. The service imports these too.
"""

from model_export.ssacl.text.anatomy_parser import (
    finding_anatomy,
    named_anatomy,
    sentence_anatomy,
    sentence_sides,
)
from model_export.ssacl.text.labeler import (
    LabelState,
    aggregate,
    label_report,
    label_sentence,
    positive_vector,
)
from model_export.ssacl.text.sentences import split_sentences, tidy_decoded
from model_export.ssacl.text.triplets import Triplet, extract_triplets, sentence_triplets

__all__ = [
    "LabelState",
    "Triplet",
    "aggregate",
    "extract_triplets",
    "finding_anatomy",
    "label_report",
    "label_sentence",
    "named_anatomy",
    "positive_vector",
    "sentence_anatomy",
    "sentence_sides",
    "sentence_triplets",
    "split_sentences",
    "tidy_decoded",
]
