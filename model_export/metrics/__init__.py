"""Evaluation metrics (numpy / pycocoevalcap only, no torch): NLG, clinical efficacy,
grounding and classification AUROC."""

from model_export.metrics.classification import auroc, auroc_per_label
from model_export.metrics.clinical import ce_scores, ce_scores_from_reports, precision_recall_f1
from model_export.metrics.grounding import GroundingScores, aggregate, score_map
from model_export.metrics.nlg import MeteorUnavailableError, nlg_scores

__all__ = [
    "GroundingScores",
    "MeteorUnavailableError",
    "aggregate",
    "auroc",
    "auroc_per_label",
    "ce_scores",
    "ce_scores_from_reports",
    "nlg_scores",
    "precision_recall_f1",
    "score_map",
]
