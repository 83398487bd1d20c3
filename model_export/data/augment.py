"""Training augmentation that keeps images, node masks and report words consistent.

* Geometry: a random affine (rotation, isotropic scale, shift) applied to the image (bilinear)
  and to the 32 node masks (nearest), borders filled with black.
* Horizontal flip **with the sides renamed**: the image and masks are mirrored, mask k takes the
  mirrored mask of its counterpart (``anatomy.MIRROR``: right lung <-> left lung) and the report
  swaps the words right and left. "Right" stays on the image's left, as in every radiograph;
  the release flips without renaming, which teaches the model that sides are arbitrary.
* Intensity (real acquisition): gamma, contrast and brightness, Gaussian blur and noise.

Images are (S, S) float32 in [0, 1]; masks (32, S, S) bool.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from model_export.data.records import TrainSample
from model_export.ssacl.anatomy import MIRROR, swap_sides


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms (0 or (1, 1) turns one off)."""

    flip_p: float = 0.5  # probability of a flip with the sides renamed
    rotate_deg: float = 10.0  # rotation drawn uniformly in +-rotate_deg
    scale: tuple[float, float] = (0.9, 1.12)  # isotropic zoom
    shift: float = 0.06  # shift in each axis, fraction of the side, uniform +-shift
    gamma: tuple[float, float] = (0.7, 1.4)  # x ** gamma
    contrast: float = 0.2  # (x - 0.5) * c + 0.5 + b, c in 1 +- contrast, b in +-contrast / 2
    blur_p: float = 0.2  # probability of a Gaussian blur, sigma in 0.4..1.2 px
    noise: float = 0.02  # std of additive Gaussian noise, drawn uniformly in 0..noise


#: Geometry only, wider than training: the "jittered" grounding test set.
JITTER_TEST = AugmentConfig(
    flip_p=0.0, rotate_deg=15.0, scale=(0.8, 1.2), shift=0.1, gamma=(1.0, 1.0), contrast=0.0,
    blur_p=0.0, noise=0.0,
)  # fmt: skip


def affine_source_coords(
    size: int, angle_rad: float, scale: float, shift: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Input (row, col) coordinates sampled by each output pixel, each (S, S) float32.

    The output is the input rotated by ``angle_rad`` about the centre, zoomed by ``scale``
    and shifted by ``shift`` = (dy, dx) pixels.
    """
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    y, x = yy - c - shift[0], xx - c - shift[1]
    cos, sin = np.cos(angle_rad) / scale, np.sin(angle_rad) / scale
    return (cos * y - sin * x + c).astype(np.float32), (sin * y + cos * x + c).astype(np.float32)


def warp_image(image: np.ndarray, coords: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Bilinear resampling at ``coords``; outside the image is 0 (black)."""
    out = ndimage.map_coordinates(image, coords, order=1, mode="constant", cval=0.0)
    return np.asarray(out, dtype=np.float32)


def warp_masks(masks: np.ndarray, coords: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Nearest-neighbour resampling of (K, S, S) masks; outside is False."""
    _, h, w = masks.shape
    r, c = np.rint(coords[0]).astype(np.int64), np.rint(coords[1]).astype(np.int64)
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    out = masks[:, np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)]
    out &= inside[None]
    return out


def flip_with_sides(
    image: np.ndarray, masks: np.ndarray | None, report: str | None
) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """Mirror the image (and masks), renaming right and left in the masks and the report."""
    flipped = np.ascontiguousarray(image[:, ::-1])
    fm = None if masks is None else np.ascontiguousarray(masks[list(MIRROR)][:, :, ::-1])
    return flipped, fm, None if report is None else swap_sides(report)


def intensity(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Gamma, contrast/brightness, blur and noise; result clipped to [0, 1]."""
    x = np.clip(image, 0.0, 1.0) ** rng.uniform(*cfg.gamma)
    if cfg.contrast > 0:
        c = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)
        b = rng.uniform(-cfg.contrast / 2, cfg.contrast / 2)
        x = (x - 0.5) * c + 0.5 + b
    if cfg.blur_p > 0 and rng.random() < cfg.blur_p:
        x = ndimage.gaussian_filter(x, rng.uniform(0.4, 1.2))
    if cfg.noise > 0:
        x = x + rng.normal(0.0, rng.uniform(0.0, cfg.noise), x.shape)
    out: np.ndarray = np.clip(x, 0.0, 1.0).astype(np.float32)
    return out


class Augmenter:
    """``MixedDataset`` transform: ``augmenter(sample, rng) -> augmented sample``."""

    def __init__(self, cfg: AugmentConfig | None = None) -> None:
        self.cfg = cfg or AugmentConfig()

    def __call__(self, sample: TrainSample, rng: np.random.Generator) -> TrainSample:
        cfg = self.cfg
        image = np.asarray(sample.image, dtype=np.float32)
        masks = None if sample.masks is None else np.asarray(sample.masks, dtype=bool)
        fmasks = None if sample.finding_masks is None else np.asarray(sample.finding_masks, bool)
        report = sample.report
        if cfg.flip_p > 0 and rng.random() < cfg.flip_p:
            image, masks, report = flip_with_sides(image, masks, report)
            fmasks = None if fmasks is None else np.ascontiguousarray(fmasks[:, :, ::-1])
        if cfg.rotate_deg > 0 or cfg.shift > 0 or cfg.scale != (1.0, 1.0):
            size = image.shape[0]
            angle = np.deg2rad(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg))
            shift = tuple(rng.uniform(-cfg.shift, cfg.shift, 2) * size)
            coords = affine_source_coords(size, angle, rng.uniform(*cfg.scale), shift)
            image = warp_image(image, coords)
            masks = None if masks is None else warp_masks(masks, coords)
            fmasks = None if fmasks is None else warp_masks(fmasks, coords)
        image = intensity(image, rng, cfg)
        return dataclasses.replace(
            sample, image=image, masks=masks, finding_masks=fmasks, report=report
        )
