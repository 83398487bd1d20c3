from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from model_export.ssacl.config import SSACLConfig
from model_export.ssacl.grounding import (
    gaussian_smooth,
    node_heatmap,
    phrase_heatmap,
    smooth_and_upsample,
)
from model_export.ssacl.model import build_model
from model_export.ssacl.text_encoder import tokenize


@pytest.mark.parametrize("size", [4, 14])
def test_gaussian_smooth_matches_scipy(size: int) -> None:
    rng = np.random.default_rng(0)
    maps = rng.random((2, size, size)).astype(np.float32)
    ours = gaussian_smooth(torch.from_numpy(maps), 1.5).numpy()
    ref = np.stack([gaussian_filter(m.astype(np.float64), 1.5) for m in maps])
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_upsample_shape_and_constant() -> None:
    out = smooth_and_upsample(torch.full((1, 4, 4), 0.3), (32, 40))
    assert out.shape == (1, 32, 40)
    assert torch.allclose(out, torch.full_like(out, 0.3), atol=1e-6)


@torch.no_grad()
def test_node_and_phrase_heatmaps(tiny_cfg: SSACLConfig) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_cfg).eval()
    images = torch.randn(2, 1, 32, 32)
    enc = model.encode_image(images)
    assert enc.attn_maps is not None
    lung = node_heatmap(enc, "left lung")
    assert torch.equal(lung, enc.attn_maps[:, 6]) and lung.shape == (2, 4, 4)
    assert torch.equal(node_heatmap(enc, 6), lung)
    ids, mask = tokenize(["small right pleural effusion"], 16)
    sim = phrase_heatmap(model, images, ids, mask, encoding=enc)
    assert sim.shape == (2, 4, 4) and float(sim.abs().max()) <= 1.0 + 1e-5
    again = phrase_heatmap(model, images, ids, mask)
    assert torch.allclose(sim, again, atol=1e-5)
    model.pos_weight.weight[0, 3] = 1.0  # reweighting favours patch 3
    weighted = phrase_heatmap(model, images, ids, mask, reweight=True, encoding=enc)
    ratio = (weighted / sim).reshape(2, -1)
    assert int(ratio[0].argmax()) == 3
