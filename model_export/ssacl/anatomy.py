"""The SS-ACL hierarchical anatomy graph: 4 levels, 32 nodes, 25 leaves (pure Python).

Node indices, the leaf-prompt order (``LEAF_IDS``), ``ROOTS_TO_LEAVES`` and the
pathology-to-anatomy map follow the official release (``util/anatomy_graph.py`` and
``figures/anatomy_graph.jpg`` of kaelsunkiller/ssacl; see ``shared/docs/ssacl-method.md`` §1).
Everything here is data plus small lookups; the service uses it without torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

GRAPH_VERSION = "ssacl-release-3a45ed6"  # the release revision the tree was read from

#: The 32 node names in the release's index order (``all_nodes``).
NODE_NAMES: tuple[str, ...] = (
    "chest",  # 0
    "lungs",  # 1
    "mediastinum",  # 2
    "skeletal structures",  # 3
    "abdomen",  # 4 (leaf)
    "right lung",  # 5
    "left lung",  # 6
    "right upper lung zone",  # 7
    "right mid lung zone",  # 8
    "right lower lung zone",  # 9
    "right hilar structures",  # 10
    "right apical zone",  # 11
    "right costophrenic angle",  # 12
    "right hemidiaphragm",  # 13
    "left upper lung zone",  # 14
    "left mid lung zone",  # 15
    "left lower lung zone",  # 16
    "left hilar structures",  # 17
    "left apical zone",  # 18
    "left costophrenic angle",  # 19
    "left hemidiaphragm",  # 20
    "trachea",  # 21
    "upper mediastinum",  # 22
    "aortic arch",  # 23
    "superior vena cava",  # 24
    "cardiac silhouette",  # 25
    "carina",  # 26
    "right atrium",  # 27
    "cavoatrial junction",  # 28
    "spine",  # 29
    "right clavicle",  # 30
    "left clavicle",  # 31
)
NUM_NODES = len(NODE_NAMES)

#: The 7 internal nodes and their children (the release's ``treeids``), parents before children.
TREE: tuple[tuple[int, tuple[int, ...]], ...] = (
    (0, (1, 2, 3, 4)),
    (1, (5, 6)),
    (5, (7, 8, 9, 10, 11, 12, 13)),
    (6, (14, 15, 16, 17, 18, 19, 20)),
    (2, (21, 22, 23, 24, 25, 26)),
    (25, (27, 28)),
    (3, (29, 30, 31)),
)
PARENT_IDS: tuple[int, ...] = tuple(p for p, _ in TREE)

#: Node ids of the 25 leaves in the order of the leaf text prompts / leaf queries.
LEAF_IDS: tuple[int, ...] = (
    *range(7, 25),
    27,
    28,
    26,
    29,
    30,
    31,
    4,
)
NUM_LEAVES = len(LEAF_IDS)
LEAF_NAMES: tuple[str, ...] = tuple(NODE_NAMES[i] for i in LEAF_IDS)

#: Level-2 roots and the leaves the decoder may attend to when the root is a candidate.
ROOTS_TO_LEAVES: dict[str, tuple[int, ...]] = {
    "lungs": tuple(range(7, 21)),
    "mediastinum": (21, 22, 23, 24, 27, 28, 26),
    "skeletal structures": (29, 30, 31),
    "abdomen": (4,),
}
ROOT_NAMES: tuple[str, ...] = tuple(ROOTS_TO_LEAVES)

#: The 14 CheXpert observations in the labeler's column order.
CHEXPERT_LABELS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
FINDINGS: tuple[str, ...] = CHEXPERT_LABELS[1:]

#: Pathology -> level-2 roots, read off the arrows of the release figure (13 findings).
PATHOLOGY_TO_ROOTS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": ("mediastinum",),
    "Cardiomegaly": ("mediastinum",),
    "Edema": ("mediastinum", "lungs"),
    "Support Devices": ("mediastinum", "skeletal structures", "abdomen"),
    "Fracture": ("skeletal structures", "abdomen"),
    "Lung Opacity": ("lungs",),
    "Lung Lesion": ("lungs",),
    "Consolidation": ("lungs",),
    "Pneumonia": ("lungs",),
    "Atelectasis": ("lungs",),
    "Pneumothorax": ("lungs", "abdomen"),
    "Pleural Effusion": ("lungs", "abdomen"),
    "Pleural Other": ("lungs",),
}


@dataclass(frozen=True)
class Node:
    """One anatomy node. ``depth`` is 1 for the chest, 4 for the deepest leaves."""

    id: int
    name: str
    parent: int | None
    children: tuple[int, ...]
    depth: int

    @property
    def is_leaf(self) -> bool:
        return not self.children


def _build_nodes() -> tuple[Node, ...]:
    children = dict(TREE)
    parent: dict[int, int] = {c: p for p, cs in TREE for c in cs}
    depth = {0: 1}
    for p, cs in TREE:  # parents are listed before their children
        for c in cs:
            depth[c] = depth[p] + 1
    return tuple(
        Node(i, NODE_NAMES[i], parent.get(i), children.get(i, ()), depth[i])
        for i in range(NUM_NODES)
    )


NODES: tuple[Node, ...] = _build_nodes()
_BY_NAME: dict[str, int] = {n: i for i, n in enumerate(NODE_NAMES)}


def node_id(name_or_id: str | int) -> int:
    """Node index for a node name (case-insensitive) or an index; ``KeyError`` if unknown."""
    if isinstance(name_or_id, int):
        if not 0 <= name_or_id < NUM_NODES:
            raise KeyError(f"anatomy node index {name_or_id} outside 0..{NUM_NODES - 1}")
        return name_or_id
    key = name_or_id.strip().lower()
    if key not in _BY_NAME:
        raise KeyError(f"unknown anatomy node {name_or_id!r}")
    return _BY_NAME[key]


def parent(node: str | int) -> int | None:
    return NODES[node_id(node)].parent


def children(node: str | int) -> tuple[int, ...]:
    return NODES[node_id(node)].children


def depth(node: str | int) -> int:
    return NODES[node_id(node)].depth


def ancestors(node: str | int) -> tuple[int, ...]:
    """Ancestors from the direct parent up to the chest (root last)."""
    out: list[int] = []
    p = parent(node)
    while p is not None:
        out.append(p)
        p = NODES[p].parent
    return tuple(out)


def path(node: str | int) -> tuple[str, ...]:
    """Names from the chest down to ``node``, e.g. ('chest', 'lungs', 'right lung', ...)."""
    i = node_id(node)
    return tuple(NODE_NAMES[j] for j in (*reversed(ancestors(i)), i))


@cache
def leaves_under(node: str | int) -> tuple[int, ...]:
    """Leaf node ids under ``node`` (itself if a leaf), in leaf-prompt order."""
    i = node_id(node)
    return tuple(leaf for leaf in LEAF_IDS if leaf == i or i in ancestors(leaf))


def leaf_index(node: str | int) -> int:
    """Position of a leaf node in the 25 leaf queries; ``KeyError`` for an internal node."""
    i = node_id(node)
    if i not in LEAF_IDS:
        raise KeyError(f"{NODE_NAMES[i]!r} is not a leaf")
    return LEAF_IDS.index(i)


def root_of(node: str | int) -> str | None:
    """The level-2 root (lungs, mediastinum, skeletal structures, abdomen) above a node."""
    i = node_id(node)
    for j in (i, *ancestors(i)):
        if NODE_NAMES[j] in ROOTS_TO_LEAVES:
            return NODE_NAMES[j]
    return None


def roots_for_findings(findings: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Anatomy candidates (level-2 roots, in ``ROOT_NAMES`` order) for CheXpert findings."""
    wanted = {r for f in findings for r in PATHOLOGY_TO_ROOTS.get(f, ())}
    return tuple(r for r in ROOT_NAMES if r in wanted)


def candidate_leaf_mask(roots: list[str] | tuple[str, ...]) -> list[bool]:
    """25 booleans: which leaf queries the decoder may attend to, given candidate roots."""
    allowed = {leaf for r in roots for leaf in ROOTS_TO_LEAVES[r]}
    return [leaf in allowed for leaf in LEAF_IDS]


def graph_dict() -> dict[str, object]:
    """A JSON-ready description of the graph (for manifests and ``GET /v1/model``)."""
    return {
        "version": GRAPH_VERSION,
        "nodes": [
            {"id": n.id, "name": n.name, "parent": n.parent, "depth": n.depth} for n in NODES
        ],
        "leaf_ids": list(LEAF_IDS),
        "roots_to_leaves": {k: list(v) for k, v in ROOTS_TO_LEAVES.items()},
        "pathology_to_roots": {k: list(v) for k, v in PATHOLOGY_TO_ROOTS.items()},
    }


def deepest(node_ids: list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """Drop every node that is an ancestor of another node in the list; keep input order."""
    ids = list(dict.fromkeys(node_ids))
    return tuple(i for i in ids if not any(i in ancestors(j) for j in ids if j != i))


# ------------------------------------------------------------------------------ mirroring
def _mirror_ids() -> tuple[int, ...]:
    """Node id -> the id of its left/right counterpart (itself when unpaired)."""
    out = []
    for name in NODE_NAMES:
        if name.startswith("right "):
            twin = "left " + name[len("right ") :]
        elif name.startswith("left "):
            twin = "right " + name[len("left ") :]
        else:
            twin = name
        out.append(_BY_NAME.get(twin, _BY_NAME[name]))
    return tuple(out)


#: ``MIRROR[k]`` is node k's counterpart under a left-right flip with the sides renamed
#: (right lung <-> left lung, ...; unpaired nodes such as "right atrium" map to themselves).
MIRROR: tuple[int, ...] = _mirror_ids()

_SIDE_WORD = re.compile(r"\b(right|left|Right|Left|RIGHT|LEFT)\b")
_SIDE_SWAP = {"right": "left", "left": "right", "Right": "Left", "Left": "Right"}
_SIDE_SWAP.update({"RIGHT": "LEFT", "LEFT": "RIGHT"})


def swap_sides(text: str) -> str:
    """``text`` with the words right and left exchanged (case kept): the report of the
    horizontally flipped image."""
    return _SIDE_WORD.sub(lambda m: _SIDE_SWAP[m.group(0)], text)
