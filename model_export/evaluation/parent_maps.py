"""Sweep of the parent-map rule: validation-phantom sentence pointing and lung-box IoU, and
the hand-marked real lung boxes, for the own-map rule and each parent own weight.

    python -m model_export.evaluation.parent_maps --weights weights --val-phantoms 120 \
        --own-weights 1 2 3 4 6

Prints one JSON line per rule. The rule choice this informs is in ``docs/GROUNDING.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence

import numpy as np

from model_export.data.pipeline import PhantomSource, phantom_seeds
from model_export.evaluation.lung_boxes import evaluate_lung_boxes
from model_export.grounding_eval import PhantomScores
from service.inference.engine import OrtEngine


def sweep(engine: OrtEngine, n: int, own_weights: Sequence[float]) -> list[dict[str, float]]:
    """One row per rule: ``own`` (parent maps alone) then ``own-and-leaves`` at each weight."""
    src = PhantomSource(phantom_seeds("val", n), engine.manifest.image_size, with_masks=True)
    phantoms = [src.phantom(i) for i in range(n)]
    base = engine.map_rules
    rules = [dataclasses.replace(base, parent_maps="own")] + [
        dataclasses.replace(base, parent_maps="own-and-leaves", parent_own_weight=w)
        for w in own_weights
    ]
    g = engine.manifest.image_size // int(engine.manifest.raw["config"]["vision"]["patch_size"])
    flat = np.full((32, g * g), 1.0 / (g * g), np.float32)  # the atlas rows are not reported
    rows = []
    for r in rules:
        engine.map_rules = r
        scores = PhantomScores(flat, r)
        for k in range(0, n, 16):
            chunk = phantoms[k : k + 16]
            maps = engine.encode(engine.preprocess([p.image for p in chunk])).node_attn
            for p, m in zip(chunk, maps, strict=True):
                scores.add(np.asarray(p.masks), m, p.sentences)
        res = scores.result()
        real = evaluate_lung_boxes(engine, prior_phantoms=1)["mean"]
        rows.append({
            "parent_maps": r.parent_maps,
            "own_weight": r.parent_own_weight if r.parent_maps != "own" else float("inf"),
            "val_sentence_pointing": res["model/sentences"]["pointing"],
            "val_lung_box_iou": res["model/lung_boxes"]["IoU"],
            "real_lung_box_iou": real.get("iou", float("nan")),
            "real_lung_pointing": real.get("pointing", float("nan")),
        })  # fmt: skip
    engine.map_rules = base
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_export.evaluation.parent_maps")
    p.add_argument("--weights", default="weights")
    p.add_argument("--val-phantoms", type=int, default=120)
    p.add_argument("--own-weights", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 6.0])
    o = p.parse_args(argv)
    for row in sweep(OrtEngine.from_weights(o.weights), o.val_phantoms, o.own_weights):
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
