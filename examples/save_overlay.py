"""Post an image to the report service and save the first sentence's heatmap over it as a PNG.

    make serve    # in another shell
    .venv/bin/python examples/save_overlay.py [--image examples/chest_phantom.png] \
        [--out overlay.png] [--url http://127.0.0.1:8000]

The API key, when the service requires one, comes from ``--api-key`` or ``$CXR_KEY``. Uses
``service.client.CxrClient`` (the ``serve`` extra). Prints the sentence, its anatomy and box.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from service.client import CxrClient

HERE = Path(__file__).resolve().parent
ALPHA = 0.6  # overlay opacity at the heatmap's maximum (0 = image only)


def jet(heat: np.ndarray) -> np.ndarray:
    """(H, W) float in [0, 1] -> (H, W, 3) float RGB in [0, 1], the jet colour map."""
    h = np.clip(heat, 0.0, 1.0)[..., None]
    centres = np.array([3.0, 2.0, 1.0])  # red, green, blue peaks at 3/4, 1/2, 1/4
    rgb: np.ndarray = np.clip(1.5 - np.abs(4.0 * h - centres), 0.0, 1.0)
    return rgb


def overlay(image: Image.Image, heatmap_png: bytes, box: dict[str, int] | None) -> Image.Image:
    """``image`` with the grey ``heatmap_png`` (any size, resized to it) blended in jet colours,
    more opaque where hotter, and ``box`` ([x0, y0, x1, y1) original pixels) outlined."""
    grey = np.asarray(image.convert("L"), np.float64)[..., None].repeat(3, axis=2) / 255.0
    hm = (
        Image.open(io.BytesIO(heatmap_png))
        .convert("L")
        .resize(image.size, Image.Resampling.BILINEAR)
    )
    heat = np.asarray(hm, np.float64) / 255.0
    alpha = ALPHA * heat[..., None]
    rgb = (1.0 - alpha) * grey + alpha * jet(heat)
    out = Image.fromarray((rgb * 255.0 + 0.5).astype(np.uint8))
    if box is not None:
        corners = (box["x0"], box["y0"], box["x1"] - 1, box["y1"] - 1)
        ImageDraw.Draw(out).rectangle(corners, outline=(255, 255, 255), width=2)
    return out


def first_sentence(report: dict[str, Any]) -> dict[str, Any]:
    """The report's first sentence; SystemExit when there is none or it has no heatmap."""
    sentences = report.get("sentences") or []
    if not sentences or sentences[0].get("heatmap") is None:
        raise SystemExit("the report has no sentence with a heatmap")
    first: dict[str, Any] = sentences[0]
    return first


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--image", type=Path, default=HERE / "chest_phantom.png")
    parser.add_argument("--out", type=Path, default=Path("overlay.png"))
    parser.add_argument("--api-key", default=os.environ.get("CXR_KEY") or None)
    args = parser.parse_args(argv)
    with CxrClient(args.url, api_key=args.api_key) as cxr:
        report = cxr.report(args.image, heatmaps=True, colormap=False)
    sentence = first_sentence(report)
    png = base64.b64decode(sentence["heatmap"]["data"])
    with Image.open(args.image) as image:  # PNG or JPEG; for DICOM pass a rendered PNG
        overlay(image, png, sentence.get("box")).save(args.out, format="PNG")
    names = ", ".join(a["name"] for a in sentence.get("anatomy") or []) or "no anatomy"
    print(f"{sentence['text']!r} ({names}; box {sentence.get('box')}) -> {args.out}")
    print(report.get("disclaimer", ""), file=sys.stderr)


if __name__ == "__main__":
    main()
