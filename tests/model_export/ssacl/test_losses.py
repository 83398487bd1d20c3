"""Each loss against values computed by hand on tiny inputs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from model_export.ssacl import anatomy
from model_export.ssacl.losses import (
    anatomical_consistency_loss,
    anatomy_reconstruction_loss,
    contrastive_loss,
    entity_loss,
    lm_loss,
    mae_loss,
    region_sentence_loss,
)


def _ce(row: list[float], target: int) -> float:
    return -row[target] + math.log(sum(math.exp(v) for v in row))


def test_mae_loss_masked_patches_only() -> None:
    pred = torch.zeros(1, 2, 2)
    target = torch.tensor([[[1.0, 1.0], [2.0, 0.0]]])  # per-patch MSE: 1 and 2
    assert float(mae_loss(pred, target, torch.tensor([[1.0, 0.0]]))) == pytest.approx(1.0)
    assert float(mae_loss(pred, target, torch.tensor([[1.0, 1.0]]))) == pytest.approx(1.5)


def test_contrastive_loss_hand_value() -> None:
    img = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    pos_logit = torch.tensor([0.0, math.log(math.e - 1)])  # softplus -> ln 2, 1
    r = 1 / math.sqrt(2)
    i2t = [[2.0, 0.0], [2 * r, 2 * r]]  # Tpar = 2 times cosine
    t2i = [[2.0, 2 * r], [0.0, 2 * r]]
    s = [math.log(2), 1.0]
    ce_scaled = sum(_ce([v * s[b] for v in m[b]], b) for m in (i2t, t2i) for b in range(2)) / 2
    wce = sum(sum(s[b] * _ce(m[b], b) for b in range(2)) / sum(s) for m in (i2t, t2i))
    expect = (ce_scaled + wce) / 4
    got = contrastive_loss(img, txt, pos_logit, torch.tensor(2.0))
    assert float(got) == pytest.approx(expect, rel=1e-5)


def test_contrastive_loss_empty_batch_is_zero() -> None:
    z = torch.zeros(0, 3)
    assert float(contrastive_loss(z, z, torch.zeros(0), torch.tensor(2.0))) == 0.0


def _identity_token0(seq: Tensor, mask: Tensor | None) -> Tensor:
    """Stand-in decoder path: mean of the real tokens (= mean of children for [m, c...])."""
    if mask is None:
        return seq[:, 0]
    m = mask[..., None].float()
    return (seq * m).sum(1) / m.sum(1)


def test_anatomy_reconstruction_hand_value() -> None:
    z = torch.zeros(1, 32, 1, requires_grad=True)
    z_masked = torch.arange(32.0).reshape(1, 32, 1).requires_grad_(True)
    # mean child ids: chest 2.5, lungs 5.5, right lung 10, left lung 17, mediastinum 23.5,
    # cardiac silhouette 27.5, skeletal 30; parents are 0 -> mean of squares
    expect = (2.5**2 + 5.5**2 + 10**2 + 17**2 + 23.5**2 + 27.5**2 + 30**2) / 7
    loss = anatomy_reconstruction_loss(z, z_masked, _identity_token0)
    assert float(loss.detach()) == pytest.approx(expect)
    loss.backward()
    assert z.grad is None  # the parent side is a detached target
    assert z_masked.grad is not None and float(z_masked.grad[0, 0, 0]) == 0.0  # chest unused


def test_anatomy_reconstruction_sees_each_parent_children() -> None:
    seen: list[int] = []

    def spy(seq: Tensor, mask: Tensor | None) -> Tensor:
        if mask is not None:
            seen.extend(int(n) for n in mask.sum(1))
        return seq[:, 0]

    anatomy_reconstruction_loss(torch.zeros(2, 32, 3), torch.randn(2, 32, 3), spy)
    assert seen == [len(kids) + 1 for _, kids in anatomy.TREE] * 2


def test_anatomical_consistency_hand_values() -> None:
    leaf = torch.eye(2).repeat(2, 1, 1)  # B = 2 images, 2 leaves, Z_b = I
    txt = torch.eye(2)
    a = math.log(1 + math.exp(-1))  # -log softmax([1, 0])[0] with Tpar = 1
    both = anatomical_consistency_loss(leaf, txt, torch.tensor([True, True]), torch.tensor(1.0))
    assert float(both) == pytest.approx(a + 0.05, rel=1e-5)  # mean s = 1/2
    one = anatomical_consistency_loss(leaf, txt, torch.tensor([True, False]), torch.tensor(1.0))
    assert float(one) == pytest.approx(a + 0.025, rel=1e-5)  # row 0 soft on itself only
    none = anatomical_consistency_loss(leaf, txt, torch.tensor([False, False]), torch.tensor(1.0))
    assert float(none) == pytest.approx(a, rel=1e-5)  # target I


def test_lm_loss_shift_and_ignore() -> None:
    logits = torch.tensor([[[0.0, math.log(3)], [5.0, 0.0], [0.0, 9.0]]])
    labels = torch.tensor([[-100, 1, -100]])  # only logits[0] -> token 1 counts: p = 3/4
    assert float(lm_loss(logits, labels)) == pytest.approx(-math.log(0.75), rel=1e-6)
    assert float(lm_loss(logits, torch.full((1, 3), -100))) == 0.0


def test_entity_loss_mask() -> None:
    logits, labels = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    got = entity_loss(logits, labels, torch.tensor([[1.0, 0.0]]))
    assert float(got) == pytest.approx(math.log(2))
    both = entity_loss(logits, labels, torch.ones(1, 2))
    assert float(both) == pytest.approx((math.log(2) + math.log(1 + math.exp(2))) / 2)


def test_region_sentence_loss_hand_value() -> None:
    """One sentence naming node 0 of image 0; image 1's node 0 points elsewhere."""
    node = torch.zeros(2, anatomy.NUM_NODES, 2)
    node[0, 0] = torch.tensor([2.0, 0.0])  # cosine 1 with the sentence
    node[1, 0] = torch.tensor([0.0, 3.0])  # cosine 0
    node[:, 1] = torch.tensor([5.0, 5.0])  # a node the sentence does not name: ignored
    sent = torch.tensor([[1.0, 0.0]])
    nodes = torch.zeros(1, anatomy.NUM_NODES)
    nodes[0, 0] = 1
    tpar = torch.tensor(2.0)
    got = region_sentence_loss(node, sent, nodes, torch.tensor([[1.0, 0.0]]), tpar)
    assert got.item() == pytest.approx(_ce([2.0, 0.0], 0), rel=1e-5)
    # both images state it: uniform target over them
    both = region_sentence_loss(node, sent, nodes, torch.tensor([[1.0, 1.0]]), tpar)
    assert both.item() == pytest.approx(0.5 * _ce([2.0, 0.0], 0) + 0.5 * _ce([2.0, 0.0], 1))
    empty = region_sentence_loss(node, sent[:0], nodes[:0], torch.zeros(0, 2), tpar)
    assert empty.item() == 0.0
