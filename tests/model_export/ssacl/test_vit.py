from __future__ import annotations

import math

import pytest
import torch

from model_export.ssacl.config import VisionConfig
from model_export.ssacl.vit import (
    MAEDecoder,
    VisionTransformer,
    patchify,
    query_attention_maps,
    query_attention_mask,
    random_masking,
    sincos_2d,
)

CFG = VisionConfig(image_size=32, patch_size=8, dim=32, depth=2, heads=2, mae_dim=16,
                   mae_depth=1, mae_heads=2)  # fmt: skip


@pytest.fixture()
def vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(CFG).eval()


def test_sincos_hand_values() -> None:
    pe = sincos_2d(8, 3)  # (9, 8): [sin/cos of x (4), sin/cos of y (4)], omega = 1, 1/100
    assert pe.shape == (9, 8)
    idx = 1 * 3 + 2  # row 1, column 2 -> x = 2, y = 1
    expect = [math.sin(2), math.sin(0.02), math.cos(2), math.cos(0.02)]
    expect += [math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)]
    assert pe[idx].tolist() == pytest.approx(expect, abs=1e-6)


def test_patchify_order() -> None:
    img = torch.arange(16.0).reshape(1, 1, 4, 4)
    p = patchify(img, 2)  # 4 patches of 4 pixels, row-major patches, row-major pixels
    assert p[0, 1].tolist() == [2.0, 3.0, 6.0, 7.0]
    assert p[0, 2].tolist() == [8.0, 9.0, 12.0, 13.0]


def test_attention_mask_structure() -> None:
    m = query_attention_mask(3, 4, torch.device("cpu"))  # 2 queries + CLS, 4 patches
    assert m[0].tolist() == [True, False, False, True, True, True, True]
    assert m[2].tolist() == [False, False, True, True, True, True, True]
    assert m[5].tolist() == [False, False, False, True, True, True, True]


def test_queries_do_not_change_patches(vit: VisionTransformer) -> None:
    x = torch.randn(2, 1, 32, 32)
    a = vit.forward_features(x)
    b = vit.forward_features(x, torch.randn(5, 32))
    assert torch.allclose(a.patches, b.patches, atol=1e-5)
    assert torch.allclose(a.cls, b.cls, atol=1e-5)  # CLS sees only itself + patches too
    assert b.queries.shape == (2, 5, 32) and a.queries.shape == (2, 0, 32)


def test_queries_are_independent(vit: VisionTransformer) -> None:
    x, q = torch.randn(2, 1, 32, 32), torch.randn(5, 32)
    full = vit.forward_features(x, q).queries
    one = vit.forward_features(x, q[2:3]).queries
    assert torch.allclose(full[:, 2:3], one, atol=1e-5)


@torch.no_grad()
def test_attention_maps_and_sdpa_agree(vit: VisionTransformer) -> None:
    x, q = torch.randn(2, 1, 32, 32), torch.randn(3, 32)
    f = vit.forward_features(x, q, return_attn=True)
    plain = vit.forward_features(x, q)  # SDPA path everywhere
    assert torch.allclose(f.patches, plain.patches, atol=1e-5)
    assert f.attn is not None
    maps = query_attention_maps(f.attn, 3, CFG.grid)
    assert maps.shape == (2, 3, 4, 4)
    # each query row: self weight + patch weights = 1; nothing on other queries / CLS
    self_w = torch.stack([f.attn[:, :, i, i] for i in range(3)], -1).mean(1)
    assert torch.allclose(maps.sum((-1, -2)) + self_w, torch.ones(2, 3), atol=1e-5)
    off_diagonal = f.attn[:, :, :4, :4] * (1 - torch.eye(4))  # queries + CLS never mix
    assert float(off_diagonal.abs().max()) == 0.0


def test_random_masking() -> None:
    torch.manual_seed(0)
    x = torch.arange(10.0)[None, :, None].repeat(3, 1, 2)
    kept, mask, ids_restore = random_masking(x, 0.5)
    assert kept.shape == (3, 5, 2) and mask.sum(1).tolist() == [5.0] * 3
    for b in range(3):  # kept tokens are exactly the unmasked positions
        assert sorted(kept[b, :, 0].tolist()) == [float(i) for i in range(10) if mask[b, i] == 0]
    order = torch.cat([kept[..., 0], torch.full((3, 5), -1.0)], 1).gather(1, ids_restore)
    assert torch.equal(order >= 0, mask == 0)


def test_masked_pass_and_mae_shapes(vit: VisionTransformer) -> None:
    mae = MAEDecoder(CFG)
    f = vit.forward_features(torch.randn(2, 1, 32, 32), torch.randn(4, 32), mask_ratio=0.5)
    assert f.patches.shape == (2, 8, 32) and f.mask is not None and f.ids_restore is not None
    pred = mae.reconstruct_patches(f.cls, f.patches, f.ids_restore)
    assert pred.shape == (2, 16, 64)


def test_reconstruct_tokens_ignores_padding() -> None:
    torch.manual_seed(0)
    mae = MAEDecoder(CFG).eval()
    seq = torch.randn(1, 3, 32)
    padded = torch.cat([seq, torch.randn(1, 4, 32)], 1)
    mask = torch.tensor([[True] * 3 + [False] * 4])
    assert torch.allclose(mae.reconstruct_tokens(seq), mae.reconstruct_tokens(padded, mask),
                          atol=1e-5)  # fmt: skip
