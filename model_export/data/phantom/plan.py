"""Phantom finding plans and bookkeeping shared by the finding drawers (numpy).

``plan_findings`` draws labels, sides and severities from the configured prior before the
anatomy exists (cardiomegaly, a widened mediastinum and a clavicle fracture change the anatomy
itself, see ``anatomy_changes``). ``assign`` turns a drawn shape into a ``PhantomFinding``
whose exact mask lies inside the union of the node masks it names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from model_export.data.phantom.geometry import LEFT, RIGHT, AnatomyChanges, Frame
from model_export.data.phantom.types import (
    NO_SEVERITY,
    SEVERITIES,
    PhantomConfig,
    PhantomFinding,
)
from model_export.ssacl.anatomy import FINDINGS

ZONES = ("apical", "upper", "mid", "lower")  # index into ZONE_LEAVES[side]
ZONE_PRIOR = (0.1, 0.25, 0.3, 0.35)  # where parenchymal patches and lesions are placed
DEVICES = ("ett", "ngt", "cvc")  # endotracheal tube, enteric tube, central venous catheter
SEV_SCALE = {"mild": 0.75, "moderate": 1.0, "severe": 1.35}
LUNG_IDS = (5, 6)
Rng = np.random.Generator
Found = PhantomFinding | None


@dataclass(frozen=True)
class FindingPlan:
    """What to draw, before the anatomy exists."""

    label: str  # CheXpert finding
    side: str | None  # "right" / "left" / "bilateral" / None
    severity: str  # one of SEVERITIES or NO_SEVERITY
    detail: str = ""  # zone name, "nodule"/"mass", device kind, "apical"/"lateral"


@dataclass
class Canvas:
    """Mutable per-image layers the findings draw into."""

    density: np.ndarray  # (H, W) float32 added to the anatomy density
    keep: np.ndarray  # (H, W) float32 multiplier of the lung markings (0 = none visible)


def _side(rng: np.random.Generator, p_bilateral: float) -> str:
    if rng.random() < p_bilateral:
        return "bilateral"
    return "right" if rng.random() < 0.5 else "left"


def _plan_one(rng: np.random.Generator, cfg: PhantomConfig, label: str) -> list[FindingPlan]:
    sev = SEVERITIES[int(rng.integers(3))]
    if label == "Support Devices":
        k = int(rng.integers(1, cfg.max_devices + 1))
        kinds = sorted(rng.choice(len(DEVICES), size=k, replace=False))
        return [
            FindingPlan(label, "right" if DEVICES[i] == "cvc" else None, NO_SEVERITY, DEVICES[i])
            for i in kinds
        ]
    if label in ("Consolidation", "Lung Opacity", "Pneumonia"):
        zone = ZONES[int(rng.choice(4, p=ZONE_PRIOR))]
        return [FindingPlan(label, _side(rng, cfg.p_bilateral), sev, zone)]
    if label == "Lung Lesion":
        zone = ZONES[int(rng.choice(4, p=ZONE_PRIOR))]
        kind = "mass" if sev == "severe" else "nodule"
        return [FindingPlan(label, _side(rng, 0.0), sev, f"{kind}:{zone}")]
    if label == "Atelectasis":
        zone = "mid" if rng.random() < 0.2 else "lower"
        return [FindingPlan(label, _side(rng, cfg.p_bilateral), sev, zone)]
    if label == "Pleural Other":
        where = "apical" if rng.random() < 0.35 else "lateral"
        return [FindingPlan(label, _side(rng, cfg.p_bilateral / 2), sev, where)]
    if label == "Pleural Effusion":
        return [FindingPlan(label, _side(rng, cfg.p_bilateral), sev)]
    if label in ("Pneumothorax", "Fracture"):
        return [FindingPlan(label, _side(rng, 0.0), sev, "clavicle" if label == "Fracture" else "")]
    if label == "Edema":
        return [FindingPlan(label, "bilateral", sev)]
    return [FindingPlan(label, None, sev)]  # Cardiomegaly, Enlarged Cardiomediastinum


def plan_findings(rng: np.random.Generator, cfg: PhantomConfig) -> list[FindingPlan]:
    """Draw the findings of one image: none (normal) or 1-3 distinct labels, devices expanded."""
    if rng.random() < cfg.p_normal:
        labels = ["Support Devices"] if rng.random() < cfg.p_devices_if_normal else []
    else:
        w = np.asarray(cfg.label_weights, dtype=np.float64)
        n = min(int(rng.integers(cfg.n_findings[0], cfg.n_findings[1] + 1)), int((w > 0).sum()))
        idx = rng.choice(len(FINDINGS), size=n, replace=False, p=w / w.sum())
        labels = [FINDINGS[i] for i in sorted(idx)]
    plans = [p for label in labels for p in _plan_one(rng, cfg, label)]
    ptx = next((p.side for p in plans if p.label == "Pneumothorax"), None)
    for i, p in enumerate(plans):  # keep pleural thickening off a pneumothorax side
        if p.label == "Pleural Other" and ptx is not None and p.side in (ptx, "bilateral"):
            other = "left" if ptx == "right" else "right"
            plans[i] = FindingPlan(p.label, other, p.severity, p.detail)
    return plans


def anatomy_changes(plans: list[FindingPlan], rng: Rng) -> AnatomyChanges:
    """The departures from normal anatomy that the planned findings require."""
    heart, mediastinum, fracture = 1.0, 1.0, None
    for p in plans:
        s = SEV_SCALE.get(p.severity, 1.0)
        if p.label == "Cardiomegaly":
            heart = 1.0 + 0.3 * s
        elif p.label == "Enlarged Cardiomediastinum":
            mediastinum = 1.0 + 0.65 * s
        elif p.label == "Fracture":
            step = {"mild": 0.0, "moderate": 0.008, "severe": 0.016}[p.severity]
            fracture = (RIGHT if p.side == "right" else LEFT, float(rng.uniform(0.3, 0.7)), step)
    return AnatomyChanges(heart, mediastinum, fracture)


def sides_of(side: str | None) -> tuple[int, ...]:
    return {"right": (RIGHT,), "left": (LEFT,), "bilateral": (RIGHT, LEFT)}.get(side or "", ())


def assign(
    plan: FindingPlan,
    shape: np.ndarray,
    candidates: list[int],
    masks: np.ndarray,
    min_frac: float = 0.05,
) -> PhantomFinding | None:
    """Clip ``shape`` to the candidate nodes, keep nodes holding >= ``min_frac`` of it, and
    drop pixels that lie only in discarded nodes. None if nothing is left."""
    mask = shape & np.logical_or.reduce(masks[candidates])
    area = int(mask.sum())
    if area == 0:
        return None
    overlap = {c: int((mask & masks[c]).sum()) for c in candidates}
    kept = [c for c in candidates if overlap[c] >= min_frac * area]
    kept = kept or [max(overlap, key=lambda c: overlap[c])]
    mask &= np.logical_or.reduce(masks[kept])
    nodes = tuple(sorted(set(kept)))
    return PhantomFinding(plan.label, nodes, plan.side, plan.severity, mask, plan.detail)


def pick_point(
    rng: Rng, f: Frame, region: np.ndarray, margin: float = 0.02
) -> tuple[float, float] | None:
    """Canonical (u, v) of a random pixel of ``region``, preferring pixels at least ``margin``
    (canonical units) inside it."""
    inner = ndimage.binary_erosion(region, iterations=max(1, round(margin / f.px)))
    idx = np.flatnonzero(inner if inner.any() else region)
    if idx.size == 0:
        return None
    k = int(idx[rng.integers(idx.size)])
    return float(f.u.flat[k]), float(f.v.flat[k])
