"""Entity-head AUROC of a checkpoint on the held-out part of a labelled image folder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_export.data.pipeline import FolderSource
from model_export.metrics.classification import auroc_per_label
from model_export.ssacl import anatomy
from model_export.ssacl.batch import normalize_image
from model_export.ssacl.model import SSACLModel

FOLDER_LABELS: tuple[str, ...] = ("Pneumonia", "Lung Opacity", "No Finding")


def model_images(
    model: SSACLModel, arrays: Sequence[np.ndarray], device: torch.device
) -> torch.Tensor:
    """(S, S) grey arrays in [0, 1] -> (B, 1, S, S) normalised model input on ``device``."""
    cfg = model.cfg
    return normalize_image(np.stack(arrays)[:, None], cfg.image_mean, cfg.image_std).to(device)


def evaluate_folder(
    model: SSACLModel, folder: Path, limit: int, batch_size: int, device: torch.device
) -> dict[str, Any]:
    """Entity-head AUROC on the folder's held-out part for the labels the folder implies."""
    from model_export.data import readers

    studies = readers.held_out_split(readers.read_image_folder(folder), "test")
    if 0 < limit < len(studies):  # a seeded subset spanning every label folder
        keep = np.random.default_rng(0).choice(len(studies), size=limit, replace=False)
        studies = [studies[i] for i in sorted(keep)]
    src = FolderSource(studies, model.cfg.vision.image_size)
    probs, labels, masks = [], [], []
    for k in range(0, len(src), batch_size):
        samples = [src[i] for i in range(k, min(k + batch_size, len(src)))]
        images = model_images(model, [np.asarray(s.image) for s in samples], device)
        with torch.no_grad():
            enc = model.encode_image(images, return_attn=False)
        probs.append(torch.sigmoid(enc.pathology_logits).float().cpu().numpy())
        labels += [s.labels for s in samples]
        masks += [s.label_mask for s in samples]
    cols = [anatomy.CHEXPERT_LABELS.index(n) for n in FOLDER_LABELS]
    p, t, m = np.concatenate(probs)[:, cols], np.array(labels)[:, cols], np.array(masks)[:, cols]
    return {"n": len(src), "auroc": auroc_per_label(p, t.astype(int), FOLDER_LABELS, m)}
