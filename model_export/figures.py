"""Overlay pictures of real radiographs as the service grounds them:
``python -m model_export.figures --weights weights --out docs/figures IMAGE...``.

For each image (PNG, JPEG or DICOM, decoded as an upload is), one PNG with four panels from
``engine.ground``: right lung, left lung, cardiac silhouette and a finding phrase, each with
its heatmap (jet, alpha = value, never stretched) and its box (pixels >= half the peak).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from service.imaging.decode import decode_image
from service.imaging.types import DecodeLimits
from service.inference.engine import OrtEngine
from service.inference.heatmaps import heatmap_png

PHRASES = ("right lung", "left lung", "cardiac silhouette", "right lower lobe consolidation")
PANEL = 320  # panel height, pixels


def panel(
    image: np.ndarray, heat: np.ndarray, box: tuple[int, int, int, int], title: str
) -> Image.Image:
    """One RGB panel: grey image, heatmap overlay, box, title."""
    h, w = image.shape
    grey = Image.fromarray(np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)).convert("RGBA")
    over = Image.open(BytesIO(heatmap_png(heat, colormap=True))).convert("RGBA")
    alpha = np.asarray(over)[..., 3].astype(np.float32) * 0.6
    over.putalpha(Image.fromarray(alpha.astype(np.uint8)))
    out = Image.alpha_composite(grey, over).convert("RGB")
    draw = ImageDraw.Draw(out)
    draw.rectangle(box, outline=(0, 255, 0), width=max(2, w // 150))
    scale = PANEL / h
    out = out.resize((max(1, int(w * scale)), PANEL))
    ImageDraw.Draw(out).text((4, 4), title, fill=(255, 255, 0))
    return out


def figure(engine: OrtEngine, image: np.ndarray, phrases: Sequence[str] = PHRASES) -> Image.Image:
    """Panels of ``phrases`` side by side."""
    side = max(image.shape)
    hw = (
        image.shape
        if side <= 1024
        else (image.shape[0] * 1024 // side, image.shape[1] * 1024 // side)
    )
    small = np.asarray(Image.fromarray(image).resize((hw[1], hw[0]), Image.Resampling.BILINEAR))
    panels = []
    for g in engine.ground(small, list(phrases), (hw[0], hw[1])):
        panels.append(
            panel(small, g.heatmap, g.box, f"{g.phrase} [{g.method}] q={g.confidence:.2f}")
        )
    out = Image.new("RGB", (sum(p.width for p in panels), PANEL))
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_export.figures", description=__doc__)
    p.add_argument("--weights", default="weights")
    p.add_argument("--out", required=True, help="folder for the PNGs")
    p.add_argument("images", nargs="+")
    o = p.parse_args(argv)
    engine = OrtEngine.from_weights(o.weights)
    out = Path(o.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in map(Path, o.images):
        img = decode_image(path.read_bytes(), None, DecodeLimits()).pixels
        figure(engine, img).save(out / f"grounding_{path.stem}.png")
        print(out / f"grounding_{path.stem}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
