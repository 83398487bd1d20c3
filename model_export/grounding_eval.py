"""Grounding evaluation of an exported weights folder, through the service's own engine and
map rules: ``python -m model_export.grounding_eval --weights weights --out runs/ground.json``.

Phantoms (test seeds, never trained on), as served and with **more geometric jitter than
training** (``augment.JITTER_TEST``): per-leaf, reference-sentence and finding-phrase pointing /
mIoU / CNR against the exact masks, each beside the **atlas-only** map (the image-free prior:
mean training masks) and the **oracle** (the truth mask averaged per patch: the grid's
ceiling). Real radiographs (no labels needed): the label-free checks of
``model_export.real_checks``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_export.data.atlas import phantom_atlas
from model_export.data.augment import JITTER_TEST, Augmenter
from model_export.data.pipeline import PhantomSource, finding_masks, phantom_seeds
from model_export.data.records import TrainSample
from model_export.evaluation.lung_boxes import evaluate_lung_boxes, evaluate_views, pct_iou
from model_export.metrics.grounding import GroundingScores, aggregate, score_map
from model_export.real_checks import batches, encode, evaluate_real, real_images
from model_export.ssacl import anatomy
from model_export.ssacl.batch import mask_cover
from model_export.ssacl.text import sentence_anatomy
from service.inference.engine import OrtEngine
from service.inference.grounding import phrase_density, sentence_nodes, stated_findings
from service.inference.heatmaps import (
    MapRules,
    box_in_pixels,
    density,
    display_grid,
    node_density,
    reference_area,
    upsample,
)

KINDS = ("model", "atlas", "oracle")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model_export.grounding_eval", description=__doc__)
    p.add_argument("--weights", default="weights", help="exported weights folder")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--phantom-test", type=int, default=300, help="held-out phantoms")
    p.add_argument("--folder", default=None, help="Kermany-style folder (held-out part)")
    p.add_argument("--real", nargs="*", default=[], help="more real images (PNG/JPEG/DICOM)")
    p.add_argument("--atlas-phantoms", type=int, default=256, help="as in training")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--lung-boxes", default=None, help="hand-marked real lung boxes (real_lung_boxes.json)"
    )
    return p.parse_args(argv)


class PhantomScores:
    """Scores per (kind, family): leaf maps, reference sentences, finding phrases."""

    def __init__(self, atlas: np.ndarray, rules: MapRules) -> None:
        self.atlas, self.rules = atlas, rules
        self.lists: dict[str, list[GroundingScores]] = {}
        self.leaf: dict[tuple[str, int], list[GroundingScores]] = {}
        self.boxes: dict[str, list[tuple[float, float]]] = {}

    def _add(self, key: str, s: GroundingScores) -> None:
        self.lists.setdefault(key, []).append(s)

    def _show(self, d: np.ndarray, mask: np.ndarray, nodes: Sequence[int] = ()) -> GroundingScores:
        area = reference_area(nodes, self.rules) if nodes else None
        return score_map(display_grid(d, self.rules, area), mask, sigma=0.0)

    def _lung_boxes(self, kind: str, m: np.ndarray, masks: np.ndarray) -> None:
        self.boxes.setdefault(kind, []).extend(lung_box_scores(m, masks, self.rules))

    def add(self, masks: np.ndarray, maps: np.ndarray, sentences: Sequence[Any]) -> None:
        """One phantom: (32, S, S) masks, (32, g, g) model maps, its reference sentences."""
        g = maps.shape[-1]
        per_kind = {"model": maps, "atlas": self.atlas.reshape(-1, g, g),
                    "oracle": mask_cover(masks, g)}  # fmt: skip
        for kind, m in per_kind.items():
            self._lung_boxes(kind, m, masks)
            for k in anatomy.LEAF_IDS:
                if masks[k].any():
                    score = self._show(density(m[k]), masks[k], (k,))
                    self.leaf.setdefault((kind, k), []).append(score)
        for s in sentences:
            if not s.node_ids:
                continue
            truth = np.any(masks[list(s.node_ids)], axis=0)
            nodes = sentence_nodes(
                sentence_anatomy(s.text, stated_findings(s.text)[1]), anatomy.ROOT_NAMES
            )
            for kind in ("model", "atlas"):
                self._add(
                    f"{kind}/sentences", self._show(node_density(per_kind[kind], nodes), truth)
                )
            self._add("oracle/sentences", self._show(density(mask_cover(truth[None], g)[0]), truth))

    def add_phrase(self, kind: str, d: np.ndarray, mask: np.ndarray) -> None:
        self._add(f"{kind}/phrases", self._show(d, mask))

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: aggregate(v) for k, v in sorted(self.lists.items())}
        for kind in KINDS:
            per = {anatomy.NODE_NAMES[k]: aggregate(v) for (kd, k), v in self.leaf.items()
                   if kd == kind}  # fmt: skip
            out[f"{kind}/leaves"] = {
                m: float(np.mean([v[m] for v in per.values()])) for m in ("pointing", "mIoU", "CNR")
            }
            out[f"{kind}/per_leaf"] = per
            ious = np.array(self.boxes.get(kind, [(np.nan, np.nan)]))
            out[f"{kind}/lung_boxes"] = {"n": len(ious), "IoU": float(np.mean(ious[:, 0])),
                                         "pointing": float(np.mean(ious[:, 1]))}  # fmt: skip
        return out


def phantom_samples(n: int, size: int, jitter: bool) -> list[tuple[TrainSample, Any]]:
    """(sample with masks, phantom) for ``n`` test phantoms, jittered when asked."""
    src = PhantomSource(phantom_seeds("test", n), size, with_masks=True)
    aug = Augmenter(JITTER_TEST)
    out = []
    for i in range(n):
        ph = src.phantom(i)
        s = TrainSample(ph.image, ph.report, (), (), "phantom", str(ph.seed), ph.masks,
                        finding_masks(ph))  # fmt: skip
        out.append((aug(s, np.random.default_rng([7, i])) if jitter else s, ph))
    return out


def evaluate_phantoms(
    engine: OrtEngine, atlas: np.ndarray, n: int, jitter: bool, batch: int
) -> dict[str, Any]:
    """Leaf, sentence and phrase scores on ``n`` test phantoms (model, atlas, oracle)."""
    rules, labels = engine.map_rules, list(engine.manifest.labels)
    scores = PhantomScores(atlas, rules)
    items = phantom_samples(n, engine.manifest.image_size, jitter)
    for chunk in batches(items, batch):
        maps, ev = encode(engine, [np.asarray(s.image) for s, _ in chunk])
        for b, (s, ph) in enumerate(chunk):
            masks, fm = np.asarray(s.masks), np.asarray(s.finding_masks)
            scores.add(masks, maps[b], ph.sentences)
            _phrases(engine, scores, ph, maps[b], ev[b], fm, atlas, labels)
    return scores.result()


def lung_box_scores(
    maps: np.ndarray, masks: np.ndarray, rules: MapRules
) -> list[tuple[float, float]]:
    """The held-out protocol on phantoms, per lung: the "right lung" / "left lung" map's box of
    pixels >= half its peak vs the mask's box (IoU), and whether the peak lies in that box.
    ``maps`` (32, g, g), ``masks`` (32, S, S)."""
    size = masks.shape[-1]
    out = []
    for name in ("right lung", "left lung"):
        k = anatomy.node_id(name)
        grid = display_grid(density(maps[k]), rules, reference_area([k], rules))
        heat = upsample(grid, size, size)
        got = box_in_pixels(grid, size, size, rules.box_threshold)
        ys, xs = np.nonzero(masks[k])
        want = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        py, px = np.unravel_index(int(np.argmax(heat)), heat.shape)
        inside = want[0] <= px < want[2] and want[1] <= py < want[3]
        out.append((pct_iou(got, want), float(inside)))
    return out


def finding_phrases(
    ph: Any, fm: np.ndarray, labels: Sequence[str]
) -> Iterator[tuple[str, np.ndarray]]:
    """(phrase, truth mask) of each reference sentence stating a positive finding with a
    non-empty mask (devices excluded); ``fm`` (14, S, S) from ``pipeline.finding_masks``."""
    for s in ph.sentences:
        if not s.positive or s.finding is None or s.finding == "Support Devices":
            continue
        mask = fm[labels.index(s.finding)]
        if mask.any():
            yield s.text, mask


def _phrases(
    engine: OrtEngine, scores: PhantomScores, ph: Any, maps: np.ndarray, ev: np.ndarray,
    fm: np.ndarray, atlas: np.ndarray, labels: list[str],
) -> None:  # fmt: skip
    """Finding phrases (the reference sentence stating a positive finding) vs its mask."""
    g = maps.shape[-1]
    for text, mask in finding_phrases(ph, fm, labels):
        emb = engine.embed_text([text])[0]
        patch = np.zeros((g * g, emb.shape[0]), np.float32)
        r = scores.rules
        d, _, _ = phrase_density(
            text, maps, ev, patch, emb, labels, r.evidence_power, r.evidence_sigma,
            r.evidence_support,
        )  # fmt: skip
        scores.add_phrase("model", d, mask)
        d_atlas, _, _ = phrase_density(text, atlas.reshape(-1, g, g), None, patch, emb, labels)
        scores.add_phrase("atlas", d_atlas, mask)
        scores.add_phrase("oracle", density(mask_cover(mask[None], g)[0]), mask)


def main(argv: Sequence[str] | None = None) -> int:
    o = parse_args(argv)
    engine = OrtEngine.from_weights(o.weights)
    size = engine.manifest.image_size
    grid = size // int(engine.manifest.raw["config"]["vision"]["patch_size"])
    atlas = phantom_atlas(o.atlas_phantoms, size, grid)
    res: dict[str, Any] = {"weights": engine.model_facts, "rules": engine.map_rules.__dict__}
    for name, jitter in (("phantoms", False), ("phantoms_jittered", True)):
        res[name] = evaluate_phantoms(engine, atlas, o.phantom_test, jitter, o.batch_size)
        print(name, json.dumps({k: v for k, v in res[name].items() if "per_leaf" not in k}))
    for name, imgs in real_images(o.folder, o.real).items():
        res[name] = evaluate_real(engine, imgs, o.batch_size)
        print(name, json.dumps(res[name]["mean"]))
    if o.lung_boxes:
        res["real_lung_boxes"] = evaluate_lung_boxes(engine, Path(o.lung_boxes))
        res["real_lung_boxes"]["views"] = evaluate_views(engine, Path(o.lung_boxes))
        print("real_lung_boxes", json.dumps(res["real_lung_boxes"]["mean"]))
        print("real_lung_box_views", json.dumps(res["real_lung_boxes"]["views"]))
    out = Path(o.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
