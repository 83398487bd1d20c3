"""The grounding additions (not in the release): pooling head, patch entity head, map
supervision, flip consistency, patch finding loss, mirroring. Hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model_export.ssacl import anatomy
from model_export.ssacl.anatomy_pool import AnatomyPooling
from model_export.ssacl.entity_head import lse_pool
from model_export.ssacl.losses import (
    flip_consistency_loss,
    map_supervision_loss,
    patch_finding_loss,
)


def test_mirror_is_an_involution_that_swaps_sides() -> None:
    m = anatomy.MIRROR
    assert all(m[m[k]] == k for k in range(anatomy.NUM_NODES))
    nid = anatomy.node_id
    assert m[nid("right lung")] == nid("left lung")
    assert m[nid("left costophrenic angle")] == nid("right costophrenic angle")
    assert m[nid("right atrium")] == nid("right atrium")  # unpaired
    assert m[nid("cardiac silhouette")] == nid("cardiac silhouette")


def test_swap_sides_keeps_case_and_other_words() -> None:
    got = anatomy.swap_sides("Right effusion. No left pneumothorax; bright lungs. LEFT apex.")
    assert got == "Left effusion. No right pneumothorax; bright lungs. RIGHT apex."


def test_map_supervision_loss_is_kl_to_the_normalised_cover() -> None:
    maps = torch.tensor([[[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]]])  # (1, K=2, N=3)
    cover = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]])  # node 1 has an empty mask
    got = float(map_supervision_loss(maps, cover, torch.tensor([True])))
    want = 0.5 * math.log(0.5 / 0.5) + 0.5 * math.log(0.5 / 0.25)  # node 0 only
    assert got == pytest.approx(want, rel=1e-6)
    assert float(map_supervision_loss(maps, cover, torch.tensor([False]))) == 0.0


def _lr_maps(grid: int = 2) -> torch.Tensor:
    """(1, 32, grid*grid): every node uniform, except right lung on the left column and left
    lung on the right column."""
    n = grid * grid
    maps = torch.full((1, anatomy.NUM_NODES, n), 1.0 / n)
    left_col = torch.tensor([1.0, 0.0] * grid) / grid
    maps[0, anatomy.node_id("right lung")] = left_col
    maps[0, anatomy.node_id("left lung")] = left_col.flip(0).reshape(grid, grid).flip(0).reshape(-1)
    return maps


def test_flip_consistency_zero_when_left_and_right_trade_places() -> None:
    maps = _lr_maps()
    # on the mirrored image, the (renamed) right lung is again on the image's left
    assert float(flip_consistency_loss(maps, maps.clone(), 2)) == pytest.approx(0.0, abs=1e-7)
    # a model that keeps "right lung" on the same anatomy after the flip is penalised:
    swapped = maps.clone()
    r, lft = anatomy.node_id("right lung"), anatomy.node_id("left lung")
    swapped[0, [r, lft]] = maps[0, [lft, r]]
    # two nodes of 32 have disjoint supports: squared Hellinger 1 each -> 2 / 32
    assert float(flip_consistency_loss(maps, swapped, 2)) == pytest.approx(2 / 32, rel=1e-5)


def test_patch_finding_loss_balances_positive_and_negative_patches() -> None:
    logits = torch.zeros(1, 2, 14)  # (B, N=2, C): sigmoid 0.5 everywhere -> BCE log 2
    logits[0, 0, 5] = 2.0
    cover = torch.zeros(1, 14, 2)
    cover[0, 5, 0] = 1.0  # label 5 positive on patch 0 only
    got = float(patch_finding_loss(logits, cover, torch.tensor([True])))
    pos = math.log1p(math.exp(-2.0))  # BCE(2, 1)
    neg = math.log(2.0)  # all other (label, patch) pairs: BCE(0, 0)
    assert got == pytest.approx(0.5 * (pos + neg), rel=1e-6)


def test_lse_pool_between_mean_and_max() -> None:
    s = torch.tensor([[[0.0], [2.0]]])  # (B, N=2, C=1)
    got = float(lse_pool(s, 1.0)[0, 0])
    assert got == pytest.approx(math.log((1 + math.exp(2.0)) / 2))
    assert 1.0 < got < 2.0


def test_pooling_is_identity_free_and_uses_the_atlas() -> None:
    torch.manual_seed(0)
    pool = AnatomyPooling(dim=8, num_nodes=3, num_patches=4, prior_weight=1.0)
    queries = torch.randn(3, 8)
    same = torch.randn(1, 1, 8).expand(1, 4, 8)  # all patches identical
    tokens, maps = pool(queries, same)
    assert torch.allclose(maps.sum(-1), torch.ones(1, 3))
    # the tokens are mixtures of patch values only: identical patches -> identical tokens
    assert torch.allclose(tokens[0, 0], tokens[0, 1], atol=1e-6)
    atlas = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0.25] * 4])
    pool.set_atlas(atlas)
    _, maps = pool(queries, same)
    assert int(maps[0, 0].argmax()) == 0 and int(maps[0, 1].argmax()) == 1
    # the masked pass: the prior follows the kept patches' grid ids
    _, kept = pool(queries, same[:, :2], patch_ids=torch.tensor([[1, 0]]))
    assert int(kept[0, 0].argmax()) == 1 and int(kept[0, 1].argmax()) == 0


def test_mirror_matches_the_flip_of_phantom_masks() -> None:
    """A flipped phantom's right and left masks trade places (the training targets)."""
    from model_export.data.augment import flip_with_sides
    from model_export.data.phantom import generate_phantom

    ph = generate_phantom(3, 64)
    img, masks, report = flip_with_sides(ph.image, ph.masks, "Right effusion.")
    assert masks is not None and report == "Left effusion."
    r, lft = anatomy.node_id("right lung"), anatomy.node_id("left lung")
    np.testing.assert_array_equal(masks[r], ph.masks[lft][:, ::-1])
    np.testing.assert_array_equal(masks[lft], ph.masks[r][:, ::-1])
    cols = np.nonzero(masks[r])[1]
    assert cols.mean() < 32  # the renamed right lung is still on the image's left
    np.testing.assert_array_equal(img, ph.image[:, ::-1])
