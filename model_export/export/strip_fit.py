"""Training of the strip head (``hires_head.StripEntityCNN``) on crops around the finding.

A whole-image batch holds a fracture in one 16 px cell of 392 in one image of nine: trained
on whole strips, the head stayed at chance (validation AUROC 0.53 after 16,000 images). Here
each batch is half positive crops, centred near a drawn finding cell, and half negative crops
from images without the finding, centred where the finding sits in other images (mirrored or
not): for a clavicle fracture that is the clavicle, with the ribs crossing it, so the head
must tell a break from a crossing. A quarter of the negatives lie anywhere in the strip, and
with a real folder a quarter come from real radiographs of its training patients (taken as
free of the finding: the folder's labels do not name it), anywhere in the strip: trained on
phantoms alone, the head called a fracture at the shoulder of a real adult film. Crops are
aligned to the 16 px cell grid, so the finding masks give each crop cell its target. The head
is convolutional, so at inference it runs on the whole strip unchanged.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from model_export.export.hires_fit import HiresOptions, as_uint8, augment, make_cnn, predict
from model_export.metrics.classification import auroc_per_label
from model_export.ssacl.entity_head import lse_pool
from model_export.ssacl.hires_head import StripEntityCNN

CELL = 16  # px per cell at the render side (masks are drawn on side / 16 cells)
CROP_CELLS = 6  # crop side in cells (96 px)


def crop_batch(
    x: np.ndarray, m: np.ndarray, labels: Sequence[int], n: int, rows: int,
    rng: np.random.Generator, real: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``n`` crops of (N, S, S) uint8 images ``x`` with (N, C, S/16, S/16) masks ``m``, each
    about one of ``labels`` in turn (crop i: ``labels[i % L]``): the first half positive (a
    cell of that label's mask inside, at a random place in the crop), the rest from images
    without it: a quarter of them anywhere, a quarter from ``real`` ((R, S, S) uint8
    radiographs without the findings; phantoms when None) anywhere, the rest centred on a
    positive cell of a random positive image, mirrored half the time. Crops lie in the top
    ``rows`` cells. Returns (n, 16k, 16k) uint8 crops and (n, L, k, k) cell targets of every
    label, k = min(6, rows)."""
    drawn = m[:, list(labels)].reshape(len(m), len(labels), -1).max(2) > 0  # (N, L)
    if not drawn.any(0).all() or drawn.all(0).any():
        raise ValueError("crops need images with and without each finding drawn")
    cols, k = m.shape[-1], min(CROP_CELLS, rows)
    crops = np.zeros((n, k * CELL, k * CELL), np.uint8)
    cells = np.zeros((n, len(labels), k, k), np.float32)
    for i in range(n):
        focus = i % len(labels)
        pos_img, neg_img = np.flatnonzero(drawn[:, focus]), np.flatnonzero(~drawn[:, focus])
        src = pos_img[rng.integers(len(pos_img))]
        ys, xs = np.nonzero(m[src, labels[focus]])
        j = rng.integers(len(ys))
        cy, cx = int(ys[j]), int(xs[j])
        images, kind = x, (i - n // 2) * 4 // max(1, n - n // 2)  # negatives: kind 0..3
        if i >= n // 2:  # negative: another image, same place or its mirror, or anywhere
            src = neg_img[rng.integers(len(neg_img))]
            cx = cols - 1 - cx if rng.random() < 0.5 else cx
            if kind == 3 and real is not None:
                images, src = real, int(rng.integers(len(real)))
            if kind >= 2:
                cy, cx = int(rng.integers(rows)), int(rng.integers(cols))
        y0 = int(np.clip(cy - rng.integers(k), 0, rows - k))
        x0 = int(np.clip(cx - rng.integers(k), 0, cols - k))
        crops[i] = images[src, y0 * CELL : (y0 + k) * CELL, x0 * CELL : (x0 + k) * CELL]
        if images is x:
            cells[i] = m[src, list(labels), y0 : y0 + k, x0 : x0 + k]
    return crops, cells


def train_strip(
    data: tuple[np.ndarray, np.ndarray, np.ndarray], xv: np.ndarray, tv: np.ndarray,
    labels: list[str], mean: float, std: float, o: HiresOptions, real: np.ndarray | None = None,
) -> tuple[StripEntityCNN, list[dict[str, Any]]]:  # fmt: skip
    """Train a strip head for ``o.labels`` on :func:`crop_batch` crops (``real``: radiographs
    without the findings, (R, S, S) uint8, for negatives) for ``o.steps`` batches of
    ``o.batch_size`` (augmented as ``hires_fit.augment``): BCE of each label's pooled crop
    logit against "a cell of it inside" plus ``o.cell_weight`` x the cell BCE; mean
    validation AUROC of the whole-strip head over its labels every 250 steps, the best state
    kept."""
    x, t, m = data
    ids = [labels.index(name) for name in o.labels]
    torch.manual_seed(o.seed)
    cnn = make_cnn(o, labels)
    assert isinstance(cnn, StripEntityCNN), "train_strip trains the strip head (head 'strip')"
    rows = cnn.grid_rows(x.shape[-1])
    opt = torch.optim.AdamW(cnn.parameters(), o.lr, weight_decay=o.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, o.lr, total_steps=o.steps, pct_start=0.05)
    g, rng = torch.Generator().manual_seed(o.seed), np.random.default_rng(o.seed)
    log: list[dict[str, Any]] = []
    best: tuple[float, dict[str, torch.Tensor]] = (-1.0, {})
    t0 = time.perf_counter()
    for step in range(1, o.steps + 1):
        crops, target = crop_batch(x, m, ids, o.batch_size, rows, rng, real)
        image = torch.from_numpy(crops).float().div_(255).unsqueeze(1)
        batch, moved = augment(image, g, torch.from_numpy(target), o.low_res)
        assert moved is not None
        cnn.train()
        own = cnn.head(cnn.body((batch - mean) / std)).flatten(2)  # (B, L, 36) cell logits
        cell_t = moved.flatten(2)
        crop_t = (cell_t.max(2).values > 0).float()  # (B, L)
        pooled = lse_pool(own, cnn.sharpness, dim=2)
        loss = F.binary_cross_entropy_with_logits(pooled, crop_t)
        loss = loss + o.cell_weight * F.binary_cross_entropy_with_logits(own, cell_t)
        opt.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        sched.step()
        if step % 100 == 0:
            print(f"step {step}/{o.steps}: loss {loss.item():.4f} "
                  f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)  # fmt: skip
        if step % 250 == 0 or step == o.steps:
            auc = auroc_per_label(
                predict(cnn, xv, mean, std)[:, ids], tv[:, ids].astype(int), list(o.labels)
            )
            score = float(np.mean(list(auc.values())))
            log.append({"step": step, "val_auroc": auc})
            print(f"step {step}: val AUROC {auc}", file=sys.stderr)
            if not score <= best[0]:  # better, or NaN (validation without both classes)
                best = (score, {k: v.clone() for k, v in cnn.state_dict().items()})
    cnn.load_state_dict(best[1])
    return cnn.eval(), log


def real_negatives(folder: Path, side: int) -> np.ndarray:
    """(R, side, side) uint8: the folder's training-patient images (``readers.held_out_split``
    "train": never the calibration or test patients), resized as the engine resizes."""
    from model_export.data import readers
    from model_export.data.pipeline import FolderSource

    studies = readers.held_out_split(readers.read_image_folder(folder), "train")
    src = FolderSource(studies, side)
    out = np.zeros((len(src), side, side), np.uint8)
    for i in range(len(src)):
        out[i] = as_uint8(src[i].image)
    return out
