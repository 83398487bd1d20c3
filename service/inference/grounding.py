"""Per-sentence and phrase grounding: text -> anatomy node(s), map, box, confidence (numpy).

Choices the release leaves open (``ssacl-method.md`` §3, [INF]), made here; the map rules
(density, no stretch, box threshold, map quality) are in :mod:`service.inference.heatmaps`.

* **Node(s) of a sentence.** ``sentence_anatomy(sentence, findings)`` (explicit anatomy words,
  else the findings' default anatomy). Of those, the nodes under an anatomy candidate (a
  level-2 root predicted from the entities) are kept; if none is, the sentence's own nodes are
  kept anyway (the text names them explicitly). A sentence with no anatomy and no finding falls
  back to the candidate roots, or to the chest (node 0) when all four roots are candidates.
  Nodes are ordered deepest first. Its map is the mean density of those nodes' maps.
* **Confidence** = language confidence x entity agreement x map quality, in [0, 1]. Language
  confidence is the geometric mean of the sentence's token probabilities. Entity agreement is
  the mean, over the findings the labeler finds in the sentence, of the entity-head
  probability p when the finding is stated positive or uncertain and 1 - p when it is negated
  (1 when the sentence states no finding). Map quality (concentration x consistency) is 0 for
  a flat map, so a sentence whose map does not localise is never confident.
* **Phrase grounding** (``/ground``): the phrase's region is the node(s) it names (or, for a
  finding alone, the finding's default anatomy); when the phrase mentions a finding and the
  weights have a patch entity head, the region density is multiplied by the patch evidence of
  that finding, smoothed by ``evidence_sigma`` patches and raised to ``evidence_power`` (both
  chosen on validation phantoms; ``anatomy-map-x-finding-evidence``), counted only inside
  the region's support (density >= ``evidence_support`` x its peak), so "small right pleural
  effusion" peaks on the effusion inside the right lung, not on a stronger one elsewhere.
  A phrase naming
  neither anatomy nor a finding falls back to the release's cosine(patch embedding, phrase
  embedding) (``text-patch-similarity``).
  Best node = the named node whose name embedding is closest to the phrase (all 32 when it
  names none); ``score`` is that cosine.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from model_export.ssacl import anatomy
from model_export.ssacl.text import label_sentence, sentence_anatomy, split_sentences
from service.inference.heatmaps import (
    MapRules,
    box_in_pixels,
    density,
    display_grid,
    gaussian_smooth,
    node_density,
    reference_area,
    upsample,
)
from service.inference.map_quality import map_quality
from service.inference.types import Box, Grounding, SentenceGrounding

_SECTION = re.compile(r"\b(findings|impression)\s*:\s*", re.IGNORECASE)


def sentence_nodes(explicit: Sequence[int], candidates: Sequence[str]) -> tuple[int, ...]:
    """Grounding node(s) of a sentence (see the module docstring), deepest first."""
    if explicit:
        inside = [n for n in explicit if anatomy.root_of(n) in candidates]
        chosen = inside or list(explicit)
    elif set(candidates) >= set(anatomy.ROOT_NAMES) or not candidates:
        chosen = [0]
    else:
        chosen = [anatomy.node_id(r) for r in candidates]
    uniq = list(dict.fromkeys(chosen))
    return tuple(sorted(uniq, key=lambda n: -anatomy.depth(n)))


def language_confidence(token_probs: Sequence[float]) -> float:
    """Geometric mean of token probabilities (1.0 for an empty sentence)."""
    if not token_probs:
        return 1.0
    p = np.clip(np.asarray(token_probs, np.float64), 1e-12, 1.0)
    return float(np.exp(np.log(p).mean()))


def entity_agreement(states: Mapping[str, int | None], probs: Mapping[str, float]) -> float:
    """Mean agreement of stated findings with the entity head (see module docstring).

    ``states``: label -> 1 positive, -1 uncertain, 0 negative, None blank (CheXpert codes).
    """
    vals = [
        probs[k] if code in (1, -1) else 1.0 - probs[k]
        for k, code in states.items()
        if code is not None and k in probs
    ]
    return float(np.mean(vals)) if vals else 1.0


def split_sections(text: str) -> tuple[str | None, str | None]:
    """(findings, impression) from 'FINDINGS: ... IMPRESSION: ...' markers.

    Without markers the whole text is the findings and the impression is None.
    """
    parts = _SECTION.split(text)
    if len(parts) == 1:
        body = text.strip()
        return (body or None), None
    sections: dict[str, str] = {}
    lead = parts[0].strip()
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        key = name.lower()
        sections[key] = (sections.get(key, "") + " " + body).strip()
    findings = " ".join(x for x in (lead, sections.get("findings", "")) if x) or None
    return findings, sections.get("impression") or None


def token_spans(tokens: Sequence[int], decode: Callable[[list[int]], str]) -> list[int]:
    """End offset in ``decode(tokens)`` of each token (prefix decoding, any tokenizer)."""
    return [len(decode(list(tokens[: i + 1]))) for i in range(len(tokens))]


def sentence_token_probs(
    text: str, sentences: Sequence[str], ends: Sequence[int], probs: Sequence[float]
) -> list[list[float]]:
    """Token probabilities of each sentence: tokens whose end falls inside its span."""
    out: list[list[float]] = []
    pos = 0
    for s in sentences:
        start = text.find(s, pos)
        if start < 0:  # the splitter normalised the text: fall back to proportional spans
            start = pos
        end = start + len(s)
        pos = end
        out.append([p for e, p in zip(ends, probs, strict=True) if start < e <= end])
    return out


def stated_findings(sentence: str) -> tuple[dict[str, int | None], list[str]]:
    """CheXpert codes of the sentence's non-blank labels, and its mentioned findings."""
    states: dict[str, int | None] = {
        k: v.code for k, v in label_sentence(sentence).items() if v.code is not None
    }
    return states, [k for k in states if k in anatomy.FINDINGS]


def sentence_groundings(
    text: str,
    tokens: Sequence[int],
    token_probs: Sequence[float],
    decode: Callable[[list[int]], str],
    node_maps: np.ndarray,
    entity_probs: Mapping[str, float],
    candidates: Sequence[str],
    image_hw: tuple[int, int],
    heatmap_hw: tuple[int, int] | None,
    rules: MapRules | None = None,
) -> tuple[SentenceGrounding, ...]:
    """Ground every sentence of a report (``heatmap_hw`` None: no heatmaps).

    ``node_maps`` (32, g, g) are the image's node maps; boxes are in ``image_hw`` pixels.
    """
    rules = rules or MapRules()
    sentences = split_sentences(text)
    per_sentence = sentence_token_probs(text, sentences, token_spans(tokens, decode), token_probs)
    out = []
    done: dict[tuple[int, ...], tuple[Box, np.ndarray | None, float]] = {}
    for s, probs in zip(sentences, per_sentence, strict=True):
        states, findings = stated_findings(s)
        nodes = sentence_nodes(sentence_anatomy(s, findings), candidates)
        if nodes not in done:
            area = reference_area(nodes, rules)
            grid = display_grid(node_density(node_maps, nodes), rules, area)
            heat = None if heatmap_hw is None else upsample(grid, *heatmap_hw)
            box = box_in_pixels(grid, *image_hw, threshold=rules.box_threshold)
            done[nodes] = (box, heat, map_quality(node_maps, nodes, rules))
        box, heat, quality = done[nodes]
        conf = language_confidence(probs) * entity_agreement(states, entity_probs) * quality
        out.append(SentenceGrounding(s, nodes, float(np.clip(conf, 0, 1)), box, heat))
    return tuple(out)


def phrase_density(
    phrase: str,
    node_maps: np.ndarray,
    evidence: np.ndarray | None,
    patch_emb: np.ndarray,
    text_emb: np.ndarray,
    labels: Sequence[str],
    power: float = 1.0,
    sigma: float = 0.0,
    support: float = 0.0,
) -> tuple[np.ndarray, tuple[int, ...], str]:
    """(g, g) density of one phrase, the nodes it names and the method that made the map.

    ``evidence`` (14, g, g) patch finding probabilities (None or all zero: no patch head),
    Gaussian-smoothed by ``sigma`` patches (``MapRules.evidence_sigma``), then raised to
    ``power`` (``MapRules.evidence_power``); both chosen on validation phantoms. Evidence
    counts only where the region's density is >= ``support`` x its peak
    (``MapRules.evidence_support``; 0: everywhere), so strong evidence outside the named
    region cannot pull the peak there; with no evidence inside, the region's own map.
    """
    _, findings = stated_findings(phrase)
    named = tuple(dict.fromkeys(sentence_anatomy(phrase, findings)))
    has_evidence = evidence is not None and bool(np.any(evidence > 0))
    if not named and not findings:
        g = node_maps.shape[-1]
        sim = np.clip((patch_emb @ text_emb).reshape(g, g), 0.0, None)
        return density(sim), named, "text-patch-similarity"
    region = node_density(node_maps, named) if named else np.ones(node_maps.shape[1:])
    if not findings or not has_evidence or evidence is None:
        return region, named, "anatomy-map"
    ev = np.mean([evidence[labels.index(f)] for f in findings if f in labels], axis=0)
    if sigma > 0:
        ev = gaussian_smooth(ev, sigma)
    if support > 0:
        ev = np.where(region >= support * float(region.max()), ev, 0.0)
    product = region * ev**power
    if not np.any(product > 0):
        return region, named, "anatomy-map"
    return density(product), named, "anatomy-map-x-finding-evidence"


def phrase_grounding(
    phrase: str,
    node_maps: np.ndarray,
    evidence: np.ndarray | None,
    patch_emb: np.ndarray,
    text_emb: np.ndarray,
    node_text_emb: np.ndarray,
    image_hw: tuple[int, int],
    heatmap_hw: tuple[int, int] | None = None,
    rules: MapRules | None = None,
    labels: Sequence[str] = anatomy.CHEXPERT_LABELS,
) -> Grounding:
    """Ground one phrase (module docstring). ``node_maps`` (32, g, g); ``evidence``
    (14, g, g) or None; ``patch_emb`` (N, E) and ``text_emb`` (E,) L2-normalised;
    ``node_text_emb`` (32, E). Box in ``image_hw`` pixels; heatmap at ``heatmap_hw``."""
    rules = rules or MapRules()
    d, named, method = phrase_density(
        phrase, node_maps, evidence, patch_emb, text_emb, labels, rules.evidence_power,
        rules.evidence_sigma, rules.evidence_support,
    )  # fmt: skip
    area = reference_area(named, rules) if method == "anatomy-map" else None
    grid = display_grid(d, rules, area)
    pool = list(named) or list(range(anatomy.NUM_NODES))
    cos = node_text_emb[pool] @ text_emb
    best = int(np.argmax(cos))
    quality = map_quality(node_maps, named, rules) if named else 0.0
    return Grounding(
        phrase=phrase,
        node_id=pool[best],
        score=float(np.clip(cos[best], -1.0, 1.0)),
        box=box_in_pixels(grid, *image_hw, threshold=rules.box_threshold),
        heatmap=upsample(grid, *(heatmap_hw or image_hw)),
        method=method,
        confidence=float(np.clip(quality, 0.0, 1.0)),
    )
