"""Graph query restoration: leaf queries -> all 32 anatomy-node queries (release §2.3)."""

from __future__ import annotations

import torch
from torch import Tensor

from model_export.ssacl import anatomy


def restore_graph_queries(leaf_queries: Tensor) -> Tensor:
    """(..., 25, D) leaf queries in ``anatomy.LEAF_IDS`` order -> (..., 32, D) node queries.

    Each parent is the mean of its direct children, recursively (children first), and the
    result is in the 32-node order (release ``root_query_restore``).
    """
    if leaf_queries.shape[-2] != anatomy.NUM_LEAVES:
        raise ValueError(f"expected {anatomy.NUM_LEAVES} leaf queries, got {leaf_queries.shape}")
    nodes: dict[int, Tensor] = {
        node: leaf_queries[..., i, :] for i, node in enumerate(anatomy.LEAF_IDS)
    }
    for parent, kids in reversed(anatomy.TREE):  # TREE lists parents before their children
        nodes[parent] = torch.stack([nodes[c] for c in kids], dim=-2).mean(dim=-2)
    return torch.stack([nodes[i] for i in range(anatomy.NUM_NODES)], dim=-2)
