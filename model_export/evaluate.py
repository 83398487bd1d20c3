"""Evaluate a checkpoint: ``python -m model_export.evaluate --checkpoint runs/small/last.pt
--phantom-test 500 --folder ../shared/data/kermany-cxr-224/train --out runs/small/eval.json``.

On held-out phantoms (a seed range disjoint from training): reports are generated (greedy or
beam) and scored with BLEU-1..4 / METEOR / ROUGE-L / CIDEr and CE-14 / CE-5 (our labeler on both
generated and reference reports; also against the phantom truth labels). Grounding uses the
phantom's exact masks: per sentence (node attention map of each leaf a sentence names, for the
generated and, to isolate grounding from generation, the reference sentences), per anatomy node
(all 32 node maps against their masks) and zero-shot phrase grounding of each finding (phrase =
its reference sentence, truth = the finding mask). On the image folder's held-out part: AUROC
of the entity head for the labels the folder implies.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from model_export.checkpoint import load_model, pick_device
from model_export.data.pipeline import PhantomSource, phantom_seeds
from model_export.evaluation.folder import evaluate_folder, model_images
from model_export.evaluation.summary import clean_json, format_table
from model_export.metrics.classification import auroc_per_label
from model_export.metrics.clinical import ce_scores
from model_export.metrics.grounding import GroundingScores, aggregate, score_map
from model_export.metrics.nlg import MeteorUnavailableError, nlg_scores
from model_export.ssacl import anatomy
from model_export.ssacl.generation import GenerationConfig
from model_export.ssacl.grounding import phrase_heatmap
from model_export.ssacl.model import ImageEncoding, SSACLModel
from model_export.ssacl.text.anatomy_parser import sentence_anatomy
from model_export.ssacl.text.labeler import positive_vector
from model_export.ssacl.text.sentences import split_sentences
from model_export.ssacl.text_encoder import tokenize


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model_export.evaluate", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="last.pt written by model_export.train")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--phantom-test", type=int, default=500, help="held-out phantoms")
    p.add_argument("--folder", default=None, help="labelled image folder (its held-out part)")
    p.add_argument("--folder-limit", type=int, default=0, help="random subset (0 = all)")
    p.add_argument("--beams", type=int, default=1, help="1 = greedy (release: 3)")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--repetition-penalty", type=float, default=2.0)
    p.add_argument("--sigma", type=float, default=1.5, help="gaussian on the patch grid")
    p.add_argument("--reweight", action="store_true", help="pos_weight in phrase grounding")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--no-meteor", action="store_true", help="skip METEOR (needs Java)")
    p.add_argument("--device", default="auto")
    return p.parse_args(argv)


def _maps(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def oracle_map(mask: np.ndarray, grid: int) -> np.ndarray:
    """(grid, grid) fraction of each patch covered by ``mask`` (H, W): the best patch-level map,
    whose scores are the ceiling the grid resolution allows."""
    h, w = mask.shape
    if h % grid or w % grid:
        raise ValueError(f"mask {mask.shape} is not a multiple of the {grid}x{grid} grid")
    m = np.asarray(mask, dtype=np.float64)
    out: np.ndarray = m.reshape(grid, h // grid, grid, w // grid).mean(axis=(1, 3))
    return out


def _leaf_scores(
    maps: np.ndarray, masks: np.ndarray, nodes: Sequence[int], sigma: float
) -> list[GroundingScores]:
    """Scores of the (32, g, g) node maps for each leaf in ``nodes`` with a non-empty mask."""
    leaves = [n for n in nodes if anatomy.NODES[n].is_leaf and masks[n].any()]
    return [score_map(maps[n], masks[n], sigma) for n in leaves]


def _node_scores(maps: np.ndarray, masks: np.ndarray, sigma: float) -> dict[int, GroundingScores]:
    """Every node whose mask is neither empty nor the whole image."""
    return {n: score_map(maps[n], masks[n], sigma) for n in range(anatomy.NUM_NODES)
            if masks[n].any() and not masks[n].all()}  # fmt: skip


def finding_phrases(ph: Any) -> list[tuple[str, np.ndarray]]:
    """(phrase, mask) per finding of a phantom: the positive reference sentence asserting the
    finding (the label name when none does) and the finding's exact mask."""
    out = []
    for f in ph.findings:
        said = [s.text for s in ph.sentences if s.finding == f.label and s.positive]
        if f.mask.any() and not f.mask.all():
            out.append((said[0] if said else f.label, f.mask))
    return out


def _phrase_scores(
    model: SSACLModel,
    images: torch.Tensor,
    enc: ImageEncoding,
    phantoms: Sequence[Any],
    opts: argparse.Namespace,
) -> list[GroundingScores]:
    """Zero-shot phrase grounding of every finding in the batch."""
    items = [(b, p, m) for b, ph in enumerate(phantoms) for p, m in finding_phrases(ph)]
    if not items:
        return []
    dev = images.device
    rows = torch.tensor([b for b, _, _ in items], device=dev)
    ids, mask = tokenize([p for _, p, _ in items], model.cfg.text.max_len)
    sub = dataclasses.replace(enc, patch_tokens=enc.patch_tokens[rows])
    heat = phrase_heatmap(
        model, images[rows], ids.to(dev), mask.to(dev), opts.reweight, encoding=sub
    )
    return [score_map(h, m, opts.sigma) for h, (_, _, m) in zip(_maps(heat), items, strict=True)]


def _batches(src: PhantomSource, size: int) -> Iterator[list[Any]]:
    for k in range(0, len(src), size):
        yield [src.phantom(i) for i in range(k, min(k + size, len(src)))]


class _Grounding:
    """Per-sample grounding scores, for the model's maps and for the oracle maps."""

    def __init__(self, sigma: float, grid: int) -> None:
        self.sigma, self.grid = sigma, grid
        self.lists: dict[str, list[GroundingScores]] = {}
        self.nodes: dict[str, dict[int, list[GroundingScores]]] = {"model": {}, "oracle": {}}

    def add(self, key: str, scores: list[GroundingScores]) -> None:
        self.lists.setdefault(key, []).extend(scores)

    def phantom(self, ph: Any, maps: np.ndarray, generated: str) -> None:
        """Sentence and node scores of one phantom; ``maps`` (32, g, g) are the model's."""
        oracle = np.stack([oracle_map(m, self.grid) for m in ph.masks])
        for sent in split_sentences(generated):
            self.add(
                "generated_sentences",
                _leaf_scores(maps, ph.masks, sentence_anatomy(sent), self.sigma),
            )
        for s in ph.sentences:
            self.add("reference_sentences", _leaf_scores(maps, ph.masks, s.node_ids, self.sigma))
            self.add(
                "oracle_reference_sentences", _leaf_scores(oracle, ph.masks, s.node_ids, self.sigma)
            )
        for kind, m in (("model", maps), ("oracle", oracle)):
            for node, sc in _node_scores(m, ph.masks, self.sigma).items():
                self.nodes[kind].setdefault(node, []).append(sc)
        for _, mask in finding_phrases(ph):
            self.add("oracle_phrase", [score_map(oracle_map(mask, self.grid), mask, self.sigma)])

    def result(self) -> dict[str, Any]:
        names = ("generated_sentences", "reference_sentences", "phrase")
        out: dict[str, Any] = {k: aggregate(self.lists.get(k, [])) for k in names}
        per = {kind: {anatomy.NODE_NAMES[k]: aggregate(v) for k, v in sorted(d.items())}
               for kind, d in self.nodes.items()}  # fmt: skip
        out["anatomy_mean"] = _mean_over_nodes(per["model"])
        out["anatomy_nodes"] = per["model"]
        out["oracle"] = {
            "reference_sentences": aggregate(self.lists.get("oracle_reference_sentences", [])),
            "phrase": aggregate(self.lists.get("oracle_phrase", [])),
            "anatomy_mean": _mean_over_nodes(per["oracle"]),
        }
        return out


def evaluate_phantoms(
    model: SSACLModel, tokenizer: Tokenizer, n: int, opts: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """NLG, CE and grounding on ``n`` held-out phantoms."""
    gen = GenerationConfig(max_new_tokens=opts.max_new_tokens, num_beams=opts.beams,
                           repetition_penalty=opts.repetition_penalty)  # fmt: skip
    src = PhantomSource(phantom_seeds("test", n), model.cfg.vision.image_size)
    texts, refs, truth, probs = [], [], [], []
    grounding = _Grounding(opts.sigma, model.cfg.vision.grid)
    for phantoms in _batches(src, opts.batch_size):
        images = model_images(model, [ph.image for ph in phantoms], device)
        with torch.no_grad():
            reports = model.generate(images, tokenizer, gen)
            enc = model.encode_image(images, return_attn=True)
            if enc.attn_maps is None:
                raise RuntimeError("model returned no attention maps")
            grounding.add("phrase", _phrase_scores(model, images, enc, phantoms, opts))
        maps = _maps(enc.attn_maps)  # (B, 32, g, g)
        for b, (ph, rep) in enumerate(zip(phantoms, reports, strict=True)):
            texts.append(rep.text)
            refs.append(ph.report)
            truth.append(ph.labels)
            probs.append(rep.entity_probs)
            grounding.phantom(ph, maps[b], rep.text)
    pred = np.array([positive_vector(t) for t in texts])
    return {
        "n": n,
        "nlg": _nlg(texts, refs, meteor=not opts.no_meteor),
        "clinical": ce_scores(pred, np.array([positive_vector(r) for r in refs])),
        "clinical_vs_truth": ce_scores(pred, (np.array(truth) == 1).astype(int)),
        "entity_auroc": auroc_per_label(
            np.array(probs), (np.array(truth) == 1).astype(int), anatomy.CHEXPERT_LABELS
        ),
        "grounding": grounding.result(),
        "examples": [
            {"generated": t, "reference": r} for t, r in zip(texts[:5], refs[:5], strict=False)
        ],
    }


def _nlg(texts: list[str], refs: list[str], meteor: bool) -> dict[str, float]:
    """NLG scores; without Java, METEOR is skipped with a warning instead of failing the run."""
    try:
        return nlg_scores(texts, refs, meteor=meteor)
    except MeteorUnavailableError as err:
        print(f"warning: {err}; METEOR skipped", file=sys.stderr)
        return nlg_scores(texts, refs, meteor=False)


def _mean_over_nodes(nodes: dict[str, dict[str, float]]) -> dict[str, float]:
    """Macro mean of pointing / mIoU / CNR over the nodes."""
    keys = ("pointing", "mIoU", "CNR")
    return {
        k: float(np.nanmean([v[k] for v in nodes.values()])) if nodes else math.nan for k in keys
    }


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    device = pick_device(opts.device)
    model, tokenizer, ckpt = load_model(opts.checkpoint, device)
    res: dict[str, Any] = {
        "checkpoint": str(opts.checkpoint),
        "step": ckpt.state.step,
        "config": ckpt.config.name,
        "git_revision": ckpt.git_revision,
        "decoding": {
            "beams": opts.beams,
            "max_new_tokens": opts.max_new_tokens,
            "repetition_penalty": opts.repetition_penalty,
            "sigma": opts.sigma,
        },  # fmt: skip
        "phantom": evaluate_phantoms(model, tokenizer, opts.phantom_test, opts, device),
    }
    if opts.folder:
        res["folder"] = evaluate_folder(
            model, Path(opts.folder), opts.folder_limit, opts.batch_size, device
        )
    print(format_table(res))
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(clean_json(res), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
