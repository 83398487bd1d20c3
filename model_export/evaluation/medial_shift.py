"""Choose the whole-lung maps' medial shift (``grounding.medial_shift``) on the hand-marked
adult lung boxes, leave one image out.

The maps of the phantom-trained weights sit outwards of the lungs on real adult films
(``docs/GROUNDING.md``); :func:`service.inference.heatmaps.shifted_medially` moves the "right
lung" / "left lung" maps toward the midline by a fraction of the width. This scores every
fraction of a grid with the held-out protocol of :mod:`model_export.evaluation.lung_boxes`
(IoU of the half-peak box, peak inside the box) and estimates what choosing it is worth by
leaving one image out: the fraction best on the other images, scored on the one left out.

``python -m model_export.evaluation.medial_shift --weights weights [--write]`` (``--write``
stores the fraction best on all images in the folder's manifest).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_export.evaluation.lung_boxes import (
    BOXES_FILE,
    ground_lungs,
    marked_images,
    score_lung,
)
from service.inference.engine import OrtEngine
from service.inference.manifest import MANIFEST_NAME, write_manifest

GRID = tuple(round(0.005 * k, 3) for k in range(10))  # 0 .. 4.5% of the width


def score_shifts(
    engine: OrtEngine,
    grid: Sequence[float] = GRID,
    boxes_file: Path = BOXES_FILE,
    root: Path | None = None,
) -> dict[str, Any]:
    """Per shift (fraction of the width): mean IoU and pointing over the marked lungs, the
    per-lung IoUs, and the leave-one-image-out choice and its mean IoU. Images are read under
    ``root`` (default: the boxes file's ``root``, relative to the working directory)."""
    _, images, missing = marked_images(boxes_file, root)
    if not images:
        raise FileNotFoundError(f"none of the images of {boxes_file} is here: {missing}")
    base = engine.map_rules
    iou = np.zeros((len(grid), 2 * len(images)))
    point = np.zeros_like(iou)
    lungs: list[tuple[str, str]] = []  # (image, lung) of each column
    try:
        for j, shift in enumerate(grid):
            engine.map_rules = dataclasses.replace(base, medial_shift=float(shift))
            col = 0
            for rel, truth, img in images:
                for g in ground_lungs(engine, img):
                    x0, y0, x1, y1 = (float(v) for v in truth[g.phrase])
                    want = (x0, y0, x1, y1)
                    iou[j, col], point[j, col], _, _ = score_lung(g.heatmap, want)
                    if j == 0:
                        lungs.append((rel, g.phrase))
                    col += 1
    finally:
        engine.map_rules = base
    loo: list[float] = []
    chosen: dict[str, float] = {}
    for rel, *_ in images:
        held = np.array([image == rel for image, _ in lungs])
        k = int(np.argmax(iou[:, ~held].mean(axis=1)))
        chosen[rel] = float(grid[k])
        loo += list(iou[k, held])
    best = int(np.argmax(iou.mean(axis=1)))
    return {
        "grid": [float(s) for s in grid],
        "iou": [float(v) for v in iou.mean(axis=1)],
        "pointing": [float(v) for v in point.mean(axis=1)],
        "per_lung_iou": {
            f"{image}: {lung}": [round(float(v), 3) for v in iou[:, c]]
            for c, (image, lung) in enumerate(lungs)
        },
        "best": float(grid[best]),
        "loo_chosen": chosen,
        "loo_iou": float(np.mean(loo)),
        "missing": missing,
    }


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, default=Path("weights"))
    p.add_argument("--write", action="store_true", help="store the best shift in the manifest")
    p.add_argument("--out", type=Path, help="JSON file for every figure (per lung too)")
    args = p.parse_args(argv)
    engine = OrtEngine.from_weights(args.weights, provider="cpu")
    result = score_shifts(engine)
    print("shift  IoU    pointing")
    for shift, iou, point in zip(result["grid"], result["iou"], result["pointing"], strict=True):
        print(f"{shift:.3f}  {iou:.3f}  {point:.2f}")
    print(f"best {result['best']}; leave-one-image-out: chosen {result['loo_chosen']}, "
          f"IoU {result['loo_iou']:.3f}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if args.write:
        body = json.loads((args.weights / MANIFEST_NAME).read_text(encoding="utf-8"))
        body.pop("files", None)
        body["grounding"] = {**body.get("grounding", {}), "medial_shift": result["best"]}
        write_manifest(args.weights, body)
        print(f"grounding.medial_shift = {result['best']} -> {args.weights / MANIFEST_NAME}")


if __name__ == "__main__":
    main()
