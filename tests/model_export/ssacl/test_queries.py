from __future__ import annotations

import pytest
import torch

from model_export.ssacl import anatomy
from model_export.ssacl.queries import restore_graph_queries


def test_leaves_kept_and_parents_are_means_of_children() -> None:
    leaf = torch.randn(anatomy.NUM_LEAVES, 6)
    nodes = restore_graph_queries(leaf)
    assert nodes.shape == (32, 6)
    for i, node in enumerate(anatomy.LEAF_IDS):
        assert torch.equal(nodes[node], leaf[i])
    for parent, kids in anatomy.TREE:
        assert torch.allclose(nodes[parent], nodes[list(kids)].mean(0))


def test_hand_values_with_one_hot_leaves() -> None:
    # leaf query i = one-hot e_i: a parent's value at leaf i is the product of 1/|children|
    # along the path from the parent down to that leaf.
    nodes = restore_graph_queries(torch.eye(anatomy.NUM_LEAVES))
    rul = anatomy.leaf_index("right upper lung zone")
    ra = anatomy.leaf_index("right atrium")
    abd = anatomy.leaf_index("abdomen")
    assert nodes[5, rul] == pytest.approx(1 / 7)  # right lung: 7 children
    assert nodes[1, rul] == pytest.approx(1 / 14)  # lungs: 2 lungs x 7
    assert nodes[0, rul] == pytest.approx(1 / 56)  # chest: 4 x 2 x 7
    assert nodes[2, ra] == pytest.approx(1 / 12)  # mediastinum: 6 x cardiac silhouette 2
    assert nodes[0, abd] == pytest.approx(1 / 4)
    assert nodes[0].sum() == pytest.approx(1.0)


def test_batched_and_bad_shape() -> None:
    leaf = torch.randn(3, anatomy.NUM_LEAVES, 4)
    assert torch.allclose(restore_graph_queries(leaf)[1], restore_graph_queries(leaf[1]))
    with pytest.raises(ValueError):
        restore_graph_queries(torch.randn(24, 4))
