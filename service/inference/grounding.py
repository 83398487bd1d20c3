"""Per-sentence grounding: sentence -> anatomy node(s), confidence, heatmap and box (numpy).

Choices the release leaves open (``ssacl-method.md`` §3, [INF]), made here:

* **Node(s) of a sentence.** ``sentence_anatomy(sentence, findings)`` (explicit anatomy words,
  else the findings' default anatomy). Of those, the nodes under an anatomy candidate (a
  level-2 root predicted from the entities) are kept; if none is, the sentence's own nodes are
  kept anyway (the text names them explicitly). A sentence with no anatomy and no finding falls
  back to the candidate roots, or to the chest (node 0) when all four roots are candidates.
  Nodes are ordered deepest first.
* **Heatmap.** Each node's query->patch attention map (head mean of the last block) is
  smoothed on the patch grid (Gaussian sigma 1.5, as the release's grounding script), min-max
  normalised; several nodes (e.g. both CP angles) are combined by an element-wise maximum; the
  result is upsampled bilinearly to the output size and normalised to [0, 1].
* **Box.** Largest connected component above half the maximum of the map at the *original*
  image size (``service.imaging.preprocess.box_from_heatmap``), computed on a map of at most
  ``BOX_MAX_SIDE`` pixels per side and scaled to original pixels.
* **Phrase grounding** (``/ground``): heatmap = cosine(patch embedding, phrase embedding) per
  patch (the release's text-conditioned similarity, without the position reweighting), then
  the same smoothing / upsampling / box. Best node = the node whose name embedding (text
  encoder, precomputed at export) has the highest cosine with the phrase embedding, among the
  nodes the phrase names (``sentence_anatomy``) or all 32 when it names none; ``score`` is
  that cosine.
* **Confidence** = language confidence x entity agreement, in [0, 1]. Language confidence is
  the geometric mean of the sentence's token probabilities under the decoder's raw softmax.
  Entity agreement is the mean, over the findings the labeler finds in the sentence, of the
  entity-head probability p when the finding is stated positive or uncertain and 1 - p when
  it is negated ("No Finding" included); 1 when the sentence states no finding.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import numpy as np

from model_export.ssacl import anatomy
from model_export.ssacl.text import label_sentence, sentence_anatomy, split_sentences
from service.imaging.preprocess import box_from_heatmap, gaussian_smooth
from service.inference.types import Box, Grounding, SentenceGrounding

SMOOTH_SIGMA = 1.5  # Gaussian sigma on the patch grid, in patches (release grounding script)
BOX_THRESHOLD = 0.5  # box = largest component >= this fraction of the map maximum
BOX_MAX_SIDE = 64  # boxes are found on a map of at most this side (±1.6%), then scaled
_SECTION = re.compile(r"\b(findings|impression)\s*:\s*", re.IGNORECASE)


def normalise01(m: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] float32 (a new array); a constant map becomes all zeros."""
    lo, hi = float(m.min()), float(m.max())
    if hi - lo <= 1e-12:
        return np.zeros(m.shape, np.float32)
    out: np.ndarray = np.subtract(m, lo, dtype=np.float32)
    out *= np.float32(1.0 / (hi - lo))
    np.clip(out, 0.0, 1.0, out=out)
    return out


@lru_cache(maxsize=128)
def _bilinear(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 and float32 weights w0, w1 of each output position (half-pixel
    centres, ``align_corners=False``: the same as ``preprocess.resize_map``); cached."""
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, (1.0 - w1).astype(np.float32), w1


def _lerp_columns(a: np.ndarray, n_out: int) -> np.ndarray:
    """Bilinear resampling of the columns of (h, w) ``a`` to (h, n_out), without BLAS
    (multi-threaded BLAS on small products is slow when ORT already uses the cores)."""
    i0, i1, w0, w1 = _bilinear(a.shape[1], n_out)
    out = np.take(a, i0, axis=1)
    out *= w0
    tmp = np.take(a, i1, axis=1)
    tmp *= w1
    out += tmp
    return out


def grid_map(maps: np.ndarray, node_ids: Sequence[int]) -> np.ndarray:
    """(32, g, g) attention maps -> one smoothed, [0, 1] (g, g) map for a set of nodes."""
    if not node_ids:
        raise ValueError("grid_map needs at least one node id")
    parts = [normalise01(gaussian_smooth(maps[i], SMOOTH_SIGMA)) for i in node_ids]
    return np.maximum.reduce(parts) if len(parts) > 1 else parts[0]


def upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """(g, g) map -> (height, width) float32 in [0, 1] (bilinear, then min-max)."""
    if height < 1 or width < 1:
        raise ValueError(f"heatmap size must be positive, got {height}x{width}")
    rows = _lerp_columns(np.ascontiguousarray(grid.astype(np.float32).T), height).T  # (H, g)
    return normalise01(_lerp_columns(np.ascontiguousarray(rows), width))


def box_in_pixels(grid: np.ndarray, height: int, width: int) -> Box:
    """Box (x0, y0, x1, y1) of a (g, g) map in pixels of an (height, width) image."""
    sh = min(height, BOX_MAX_SIDE)
    sw = min(width, BOX_MAX_SIDE)
    x0, y0, x1, y1 = box_from_heatmap(upsample(grid, sh, sw), BOX_THRESHOLD)
    fx, fy = width / sw, height / sh
    return (
        int(np.floor(x0 * fx)),
        int(np.floor(y0 * fy)),
        min(width, int(np.ceil(x1 * fx))),
        min(height, int(np.ceil(y1 * fy))),
    )


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


def _stated(sentence: str) -> tuple[dict[str, int | None], list[str]]:
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
    node_attn: np.ndarray,
    entity_probs: Mapping[str, float],
    candidates: Sequence[str],
    image_hw: tuple[int, int],
    heatmap_hw: tuple[int, int] | None,
) -> tuple[SentenceGrounding, ...]:
    """Ground every sentence of a report (``heatmap_hw`` None: no heatmaps).

    ``node_attn`` (32, g, g) are the image's attention maps; boxes are in ``image_hw`` pixels.
    """
    sentences = split_sentences(text)
    per_sentence = sentence_token_probs(text, sentences, token_spans(tokens, decode), token_probs)
    out = []
    done: dict[tuple[int, ...], tuple[Box, np.ndarray | None]] = {}  # node set -> box, map
    for s, probs in zip(sentences, per_sentence, strict=True):
        states, findings = _stated(s)
        nodes = sentence_nodes(sentence_anatomy(s, findings), candidates)
        if nodes not in done:
            grid = grid_map(node_attn, nodes)
            heat = None if heatmap_hw is None else upsample(grid, *heatmap_hw)
            done[nodes] = (box_in_pixels(grid, *image_hw), heat)
        box, heat = done[nodes]
        conf = language_confidence(probs) * entity_agreement(states, entity_probs)
        out.append(SentenceGrounding(s, nodes, float(np.clip(conf, 0, 1)), box, heat))
    return tuple(out)


def phrase_grounding(
    phrase: str,
    patch_emb: np.ndarray,
    text_emb: np.ndarray,
    node_text_emb: np.ndarray,
    image_hw: tuple[int, int],
    heatmap_hw: tuple[int, int] | None = None,
) -> Grounding:
    """Ground one phrase: ``patch_emb`` (N, E) and ``text_emb`` (E,) L2-normalised,
    ``node_text_emb`` (32, E) L2-normalised node-name embeddings. The box is in ``image_hw``
    pixels; the heatmap has size ``heatmap_hw`` (default ``image_hw``)."""
    g = int(round(np.sqrt(patch_emb.shape[0])))
    sim = (patch_emb @ text_emb).reshape(g, g)
    grid = normalise01(gaussian_smooth(sim, SMOOTH_SIGMA))
    _, findings = _stated(phrase)
    named = sentence_anatomy(phrase, findings)
    pool = list(dict.fromkeys(named)) or list(range(anatomy.NUM_NODES))
    cos = node_text_emb[pool] @ text_emb
    best = int(np.argmax(cos))
    return Grounding(
        phrase=phrase,
        node_id=pool[best],
        score=float(np.clip(cos[best], -1.0, 1.0)),
        box=box_in_pixels(grid, *image_hw),
        heatmap=upsample(grid, *(heatmap_hw or image_hw)),
    )
