"""Map quality in [0, 1]: how far a sentence's anatomy map can be trusted (numpy only).

Quality = concentration x consistency. Concentration compares the map's entropy H with a flat
map's (log N) and with the node's reference entropy H_ref (its atlas spread):
``clip((log N - H) / (log N - H_ref), 0, 1)``. Consistency is the share of the node's mass
inside its parent's half-peak region (1 for the root): a lung zone whose map leaves its lung
is not trusted. The service multiplies each confidence by it, so a flat map reports 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from model_export.ssacl import anatomy
from service.inference.heatmaps import MapRules, density, node_density


def entropy(d: np.ndarray) -> float:
    """Entropy (nats) of a density or map, as a distribution over its cells."""
    p = np.clip(np.asarray(d, dtype=np.float64).ravel(), 0.0, None)
    total = p.sum()
    if total <= 0:
        return float(np.log(p.size))
    p = p / total
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum())


def concentration(d: np.ndarray, ref_entropy: float | None) -> float:
    """(log N - H) / (log N - H_ref) clipped to [0, 1]; H_ref None or >= log N -> log N / 2."""
    flat = float(np.log(np.asarray(d).size))
    ref = flat / 2 if ref_entropy is None or ref_entropy >= flat - 1e-6 else ref_entropy
    return float(np.clip((flat - entropy(d)) / (flat - ref), 0.0, 1.0))


def consistency(maps: np.ndarray, node: int, threshold: float = 0.5) -> float:
    """Share of ``node``'s map mass inside its parent's region >= threshold x parent peak."""
    par = anatomy.parent(node)
    if par is None:
        return 1.0
    child, parent = density(maps[node]), density(maps[par])
    inside = parent >= threshold * parent.max()
    return float(child[inside].sum() / child.sum())


def map_quality(maps: np.ndarray, node_ids: Sequence[int], rules: MapRules) -> float:
    """Concentration x consistency of a sentence's node map(s) (module docstring)."""
    d = node_density(maps, node_ids)
    refs = [rules.reference_entropy[n] for n in node_ids if n < len(rules.reference_entropy)]
    ref = float(np.mean(refs)) if refs else None
    cons = float(np.mean([consistency(maps, n, rules.box_threshold) for n in node_ids]))
    return concentration(d, ref) * cons
