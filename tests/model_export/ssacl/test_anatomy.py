"""The anatomy graph: the release's tree, leaf order, parent means and the synonym matcher."""

from __future__ import annotations

import pytest

from model_export.ssacl import anatomy as A
from model_export.ssacl.text.mentions import find_mentions


def test_sizes_and_levels() -> None:
    assert A.NUM_NODES == 32
    assert A.NUM_LEAVES == 25
    assert len(set(A.LEAF_IDS)) == 25
    assert sum(n.is_leaf for n in A.NODES) == 25
    assert {n.depth for n in A.NODES} == {1, 2, 3, 4}
    assert len(A.PARENT_IDS) == 7


def test_release_leaf_order_and_tree() -> None:
    assert A.LEAF_IDS == (*range(7, 25), 27, 28, 26, 29, 30, 31, 4)
    assert A.LEAF_NAMES[0] == "right upper lung zone"
    assert A.LEAF_NAMES[-1] == "abdomen"
    assert A.children("chest") == (1, 2, 3, 4)
    assert A.children("cardiac silhouette") == (27, 28)
    assert A.parent("carina") == A.node_id("mediastinum")
    assert A.path("right atrium") == ("chest", "mediastinum", "cardiac silhouette", "right atrium")
    assert A.depth("right atrium") == 4 and A.depth("trachea") == 3


def test_leaves_under_and_roots() -> None:
    assert len(A.leaves_under("lungs")) == 14
    assert set(A.leaves_under("mediastinum")) == set(A.ROOTS_TO_LEAVES["mediastinum"])
    assert A.leaves_under("chest") == A.LEAF_IDS
    assert A.root_of("left costophrenic angle") == "lungs"
    assert A.root_of("chest") is None
    # roots2leafs covers every leaf exactly once
    covered = sorted(x for v in A.ROOTS_TO_LEAVES.values() for x in v)
    assert covered == sorted(A.LEAF_IDS)


def test_pathology_map_and_candidate_mask() -> None:
    assert set(A.PATHOLOGY_TO_ROOTS) == set(A.FINDINGS)
    assert A.roots_for_findings(["Cardiomegaly", "Pleural Effusion"]) == (
        "lungs", "mediastinum", "abdomen",
    )  # fmt: skip
    mask = A.candidate_leaf_mask(["skeletal structures"])
    assert sum(mask) == 3
    assert [A.LEAF_NAMES[i] for i, m in enumerate(mask) if m] == [
        "spine", "right clavicle", "left clavicle",
    ]  # fmt: skip


def test_parent_query_is_mean_of_children_recursively() -> None:
    """Restoring parents as child means gives the chest = mean of its 4 direct children."""
    vals: dict[int, float] = {leaf: float(leaf) for leaf in A.LEAF_IDS}
    for p, _ in reversed(A.TREE):  # deepest parents first
        vals[p] = sum(vals[c] for c in A.children(p)) / len(A.children(p))
    cardiac = (27 + 28) / 2
    mediastinum = (21 + 22 + 23 + 24 + cardiac + 26) / 6
    assert vals[25] == pytest.approx(cardiac)
    assert vals[2] == pytest.approx(mediastinum)
    assert vals[0] == pytest.approx((vals[1] + vals[2] + vals[3] + vals[4]) / 4)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Opacity at the right base.", {"right lower lung zone"}),
        ("The heart is enlarged.", {"cardiac silhouette"}),
        ("Blunting of the left CP angle.", {"left costophrenic angle"}),
        ("Bibasilar atelectasis.", {"right lower lung zone", "left lower lung zone"}),
        ("RUL consolidation.", {"right upper lung zone"}),
        ("Lingular scarring.", {"left mid lung zone"}),
        ("Degenerative changes of the thoracic spine.", {"spine"}),
        ("Tortuous aorta.", {"aortic arch"}),
        (
            "No free air under the diaphragm.",
            {"abdomen", "right hemidiaphragm", "left hemidiaphragm"},
        ),
    ],
)
def test_find_mentions(text: str, expected: set[str]) -> None:
    names = {A.NODE_NAMES[i] for m in find_mentions(text) for i in m.node_ids}
    assert names == expected


def test_deepest_drops_ancestors() -> None:
    ids = [A.node_id("lungs"), A.node_id("right lung"), A.node_id("right apical zone")]
    assert A.deepest(ids) == (A.node_id("right apical zone"),)


def test_unknown_node_raises() -> None:
    with pytest.raises(KeyError, match="unknown anatomy node"):
        A.node_id("spleen")
    with pytest.raises(KeyError, match="not a leaf"):
        A.leaf_index("lungs")
