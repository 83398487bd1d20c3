"""Pathology entities -> anatomy candidates -> decoder prompt and prefix mask (pure Python).

The release predicts entities with a separately fine-tuned CLS head (not released) at test
time and takes them from the report (CheXbert) in training; here a 14-label head is trained
jointly and the same functions serve training (labels) and inference (probabilities).
Entities are the positive *findings* (the 13 labels after "No Finding"). With no entity the
prompt is "Pathology Entities: No Finding" and every leaf stays visible (the release maps only
entities, which would hide every leaf; allowing all is the "No Finding" choice of this project).
"""

from __future__ import annotations

from collections.abc import Sequence

from model_export.ssacl import anatomy

PROMPT_HEAD = "Pathology Entities: "  # the release's case-study header wording
NO_FINDING = "No Finding"


def entities_from_scores(
    scores: Sequence[float], threshold: float = 0.5, mask: Sequence[float] | None = None
) -> tuple[str, ...]:
    """Findings whose score (probability or 0/1 label) is >= ``threshold``, in label order.

    ``scores`` and ``mask`` have 14 entries in ``anatomy.CHEXPERT_LABELS`` order; entries with
    mask 0 (unknown) are skipped; "No Finding" is never an entity.
    """
    if len(scores) != len(anatomy.CHEXPERT_LABELS):
        raise ValueError(f"expected {len(anatomy.CHEXPERT_LABELS)} scores, got {len(scores)}")
    out = []
    for i, name in enumerate(anatomy.CHEXPERT_LABELS):
        known = mask is None or mask[i] > 0
        if name != NO_FINDING and known and scores[i] >= threshold:
            out.append(name)
    return tuple(out)


def candidate_roots(entities: Sequence[str]) -> tuple[str, ...]:
    """Level-2 anatomy candidates for the entities; all four roots when there is none."""
    roots = anatomy.roots_for_findings(tuple(entities))
    return roots if entities else anatomy.ROOT_NAMES


def leaf_mask(entities: Sequence[str]) -> list[bool]:
    """25 booleans: which leaf tokens of the decoder prefix are visible."""
    return anatomy.candidate_leaf_mask(candidate_roots(entities))


def entity_prompt(entities: Sequence[str]) -> str:
    """The decoder's text prompt, e.g. 'Pathology Entities: Cardiomegaly, Pleural Effusion'."""
    return PROMPT_HEAD + (", ".join(entities) if entities else NO_FINDING)


def prompt_corpus() -> list[str]:
    """Prompt strings covering every label name, for training the decoder tokenizer."""
    return [entity_prompt(())] + [entity_prompt((f,)) for f in anatomy.FINDINGS]
