"""Contact sheet of phantoms for eyeballing: ``python -m model_export.data.phantom.grid``.

Top: a 4 x 4 grid of 224 px phantoms captioned with their findings. Bottom: one phantom at
2x with the outlines of the 25 leaf masks (left) and of the internal nodes plus the finding
masks in red (right). Needs Pillow (installed with the ``serve`` extra).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from model_export.data.phantom import PhantomSample, generate_phantom
from model_export.ssacl.anatomy import LEAF_IDS, PARENT_IDS

SHORT = {
    "Enlarged Cardiomediastinum": "ECM",
    "Cardiomegaly": "Cardiomeg",
    "Lung Opacity": "Opacity",
    "Lung Lesion": "Lesion",
    "Consolidation": "Consol",
    "Pneumothorax": "PTX",
    "Pleural Effusion": "Effusion",
    "Pleural Other": "PlOther",
    "Support Devices": "Device",
    "Atelectasis": "Atelect",
}
CAPTION = 30  # caption height in pixels


def caption(p: PhantomSample) -> str:
    """Short finding list, e.g. 'Effusion(R,mod) Device(ett)'."""
    parts = []
    for f in p.findings:
        side = (f.side or "")[:1].upper()
        extra = f.detail.split(":")[0] if f.label == "Support Devices" else f.severity[:3]
        parts.append(f"{SHORT.get(f.label, f.label)}({','.join(x for x in (side, extra) if x)})")
    return " ".join(parts) or "normal"


def _outlines(rgb: np.ndarray, masks: np.ndarray, ids: list[int], colours: np.ndarray) -> None:
    for nid, colour in zip(ids, colours, strict=True):
        m = masks[nid]
        edge = m & ~ndimage.binary_erosion(m)
        rgb[edge] = colour


def _grey_rgb(img: np.ndarray, scale: int) -> np.ndarray:
    big = np.kron(img, np.ones((scale, scale), dtype=np.float32))
    return np.repeat((big * 255).astype(np.uint8)[..., None], 3, axis=2)


def outline_panels(p: PhantomSample, scale: int = 2) -> Image.Image:
    """Two side-by-side panels: leaf outlines; internal-node outlines + findings in red."""
    masks = np.repeat(np.repeat(p.masks, scale, axis=1), scale, axis=2)
    rng = np.random.default_rng(0)
    leaves = _grey_rgb(p.image, scale)
    _outlines(leaves, masks, list(LEAF_IDS), rng.integers(60, 256, (len(LEAF_IDS), 3)))
    parents = _grey_rgb(p.image, scale)
    _outlines(parents, masks, list(PARENT_IDS), rng.integers(60, 256, (len(PARENT_IDS), 3)))
    for f in p.findings:
        m = np.kron(f.mask, np.ones((scale, scale), dtype=bool))
        parents[m & ~ndimage.binary_erosion(m)] = (255, 0, 0)
    return Image.fromarray(np.concatenate([leaves, parents], axis=1))


def contact_sheet(seeds: list[int], size: int = 224, cols: int = 4) -> Image.Image:
    """Grid of captioned phantoms above the outline panels of the first seed."""
    samples = [generate_phantom(s, size) for s in seeds]
    rows = (len(samples) + cols - 1) // cols
    grid = Image.new("RGB", (cols * size, rows * (size + CAPTION)), "black")
    draw = ImageDraw.Draw(grid)
    for i, p in enumerate(samples):
        x, y = (i % cols) * size, (i // cols) * (size + CAPTION)
        grid.paste(Image.fromarray((p.image * 255).astype(np.uint8)).convert("RGB"), (x, y))
        text = f"#{p.seed} {caption(p)}"
        draw.text((x + 3, y + size + 2), text[:38], fill="white")
        draw.text((x + 3, y + size + 15), text[38:76], fill="white")
    panels = outline_panels(next((p for p in samples if p.findings), samples[0]))
    sheet = Image.new("RGB", (max(grid.width, panels.width), grid.height + panels.height))
    sheet.paste(grid, (0, 0))
    sheet.paste(panels, (0, grid.height))
    return sheet


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/phantom_grid.png"))
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--count", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args(argv)
    seeds = list(range(args.first_seed, args.first_seed + args.count))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(seeds, args.size).quantize(256).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
