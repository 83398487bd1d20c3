"""Phantom lung and pleural findings drawn inside their lung zones (numpy).

Each drawer adds its density to the ``Canvas`` (and may hide lung markings) and returns the
finding with its exact mask, clipped to the candidate anatomy leaves it names.
"""

from __future__ import annotations

import numpy as np

from model_export.data.phantom.geometry import (
    LEFT,
    LUNG_LEAVES,
    RIGHT,
    ZONE_LEAVES,
    Frame,
    Geometry,
    lung_shape,
    lung_zone_edges,
)
from model_export.data.phantom.plan import (
    LUNG_IDS,
    SEV_SCALE,
    ZONES,
    Canvas,
    FindingPlan,
    Found,
    Rng,
    assign,
    pick_point,
    sides_of,
)
from model_export.data.phantom.render import band, texture


def patch(
    plan: FindingPlan, g: Geometry, f: Frame, masks: np.ndarray, rng: Rng, c: Canvas
) -> Found:
    s = SEV_SCALE[plan.severity]
    zone = ZONES.index(plan.detail)
    cands = [ZONE_LEAVES[side][zone] for side in sides_of(plan.side)]
    field = np.zeros_like(f.u)
    for nid in cands:
        centre = pick_point(rng, f, masks[nid])
        if centre is None:
            continue
        for _ in range(int(rng.integers(3, 6))):
            cu, cv = centre[0] + rng.normal(0, 0.025 * s), centre[1] + rng.normal(0, 0.02 * s)
            sig = rng.uniform(0.018, 0.035) * s
            du, dv = f.u - cu, f.v - cv
            field += np.exp((du * du + dv * dv) * (-0.5 / sig**2))
    alpha = {"Consolidation": 0.5, "Pneumonia": 0.42, "Lung Opacity": 0.28}[plan.label]
    mottle = 1.0 + (0.15 if plan.label == "Consolidation" else 0.35) * texture(
        rng, f.u.shape[0], 24
    )
    region = np.zeros_like(f.u)  # the zone with soft upper/lower edges, within the lung
    for side in sides_of(plan.side):
        lo, hi = lung_zone_edges(g.lungs[side])[zone : zone + 2]
        win = np.clip((f.v - lo) / 0.025 + 1.0, 0.0, 1.0) * np.clip(
            (hi - f.v) / 0.025 + 1.0, 0.0, 1.0
        )
        region += win * masks[LUNG_IDS[side]]
    c.density += alpha * (1.0 - np.exp(-1.5 * field)) * mottle * region
    c.keep *= 1.0 - 0.7 * np.clip(field, 0.0, 1.0) * region
    return assign(plan, field > 0.5, cands, masks)


def effusion(
    plan: FindingPlan, g: Geometry, f: Frame, masks: np.ndarray, rng: Rng, c: Canvas
) -> Found:
    shape = np.zeros_like(masks[0])
    cands: list[int] = []
    for side in sides_of(plan.side):
        lung, lung_mask = g.lungs[side], masks[LUNG_IDS[side]]
        edges = lung_zone_edges(lung)
        level = {
            "mild": lung.cp_v - rng.uniform(0.05, 0.07),
            "moderate": edges[3] + rng.uniform(0.0, 0.03),
            "severe": 0.5 * (edges[2] + edges[3]),
        }[plan.severity]
        t = np.clip(f.uu[side] / lung.lat_u, 0.0, 1.0)
        surface = level - 0.08 * t * t * np.sqrt(t)  # meniscus: climbs the lateral chest wall
        ramp = np.clip((f.v - surface) / 0.04, 0.0, 1.0) * lung_mask
        c.density += 0.62 * ramp
        c.keep *= 1.0 - 0.9 * ramp
        shape |= lung_mask & (f.v >= surface)
        apical, upper, mid, lower, _, cp, hemi = LUNG_LEAVES[side]
        cands += [mid, lower, cp, hemi]
    return assign(plan, shape, cands, masks)


def pneumothorax(
    plan: FindingPlan, g: Geometry, f: Frame, masks: np.ndarray, rng: Rng, c: Canvas
) -> Found:
    side = sides_of(plan.side)[0]
    lung, uu = g.lungs[side], f.uu[side]
    edges = lung_zone_edges(lung)
    v_lim = edges[2] if plan.severity == "mild" else edges[3]
    depth = {"mild": 0.022, "moderate": 0.04, "severe": 0.065}[plan.severity]
    inset = depth * np.clip((v_lim - f.v) / 0.08, 0.0, 1.0)
    collapsed = lung_shape(lung, uu, f.v, f.dia[side], inset)
    region = masks[LUNG_IDS[side]] & ~collapsed
    rim = collapsed & ~lung_shape(lung, uu, f.v, f.dia[side], inset + 1.5 * f.px) & (inset > 0.004)
    c.density += 0.14 * rim - 0.08 * region
    c.keep *= ~region
    return assign(plan, region, list(ZONE_LEAVES[side][:3]), masks)


def lesion(
    plan: FindingPlan, g: Geometry, f: Frame, masks: np.ndarray, rng: Rng, c: Canvas
) -> Found:
    side = sides_of(plan.side)[0]
    kind, zone = plan.detail.split(":")
    lung_mask = masks[LUNG_IDS[side]]
    lo, hi = {"mild": (0.012, 0.018), "moderate": (0.02, 0.03)}.get(plan.severity, (0.045, 0.065))
    r = rng.uniform(lo, hi)  # radius, canonical units
    centre = pick_point(rng, f, masks[ZONE_LEAVES[side][ZONES.index(zone)]], margin=r)
    if centre is None:
        return None
    du, dv = f.u - centre[0], f.v - centre[1]
    dist = np.sqrt(du * du + dv * dv)
    if kind == "mass":  # lobulated outline
        ang = np.arctan2(dv, du)
        r = r * (1.0 + 0.12 * np.sin(3 * ang + rng.uniform(0, 6.3)) + 0.06 * np.sin(5 * ang))
    c.density += 0.48 * np.clip((r - dist) / (1.5 * f.px) + 0.5, 0.0, 1.0) * lung_mask
    return assign(plan, (dist <= r) & lung_mask, list(ZONE_LEAVES[side]), masks)


def atelectasis(
    plan: FindingPlan, g: Geometry, f: Frame, masks: np.ndarray, rng: Rng, c: Canvas
) -> Found:
    zone = ZONES.index(plan.detail)
    cands = [ZONE_LEAVES[side][zone] for side in sides_of(plan.side)]
    shape = np.zeros_like(masks[0])
    half_th = {"mild": 0.005, "moderate": 0.008, "severe": 0.012}[plan.severity]
    for nid in cands:
        centre = pick_point(rng, f, masks[nid], margin=0.03)
        if centre is None:
            continue
        a, curve = rng.normal(0.0, 0.2), rng.normal(0.0, 3.0)
        half_len = rng.uniform(0.045, 0.08) * SEV_SCALE[plan.severity]
        du, dv = f.u - centre[0], f.v - centre[1]
        along = du * np.cos(a) + dv * np.sin(a)
        across = dv * np.cos(a) - du * np.sin(a) - curve * along * along
        ends = np.clip((half_len - np.abs(along)) / 0.01, 0.0, 1.0)
        plate = band(across, half_th, f.px) * ends * masks[nid]
        c.density += 0.5 * plate
        shape |= (plate > 0.5) & masks[nid]
    return assign(plan, shape, cands, masks)


def edema(
    plan: FindingPlan, g: Geometry, f: Frame, masks: np.ndarray, rng: Rng, c: Canvas
) -> Found:
    radius = {"mild": 0.11, "moderate": 0.15, "severe": 0.2}[plan.severity]
    amp = {"mild": 0.2, "moderate": 0.3, "severe": 0.4}[plan.severity]
    haze = np.zeros_like(f.u)
    for side in (RIGHT, LEFT):
        hu, hv = g.lungs[side].hilum
        du, dv = f.uu[side] - hu, f.v - hv
        haze += np.exp(-(du * du + dv * dv) / radius**2) * masks[LUNG_IDS[side]]
    mottle = 1.0 + 0.3 * texture(rng, f.u.shape[0], 30)
    c.density += amp * haze * mottle
    c.keep *= 1.0 - 0.6 * haze
    cands = [LUNG_LEAVES[side][i] for side in (RIGHT, LEFT) for i in (4, 1, 2, 3)]
    return assign(plan, haze > 0.5, cands, masks)


def pleural_other(
    plan: FindingPlan, g: Geometry, f: Frame, masks: np.ndarray, rng: Rng, c: Canvas
) -> Found:
    depth = {"mild": 0.012, "moderate": 0.018, "severe": 0.026}[plan.severity]
    shape = np.zeros_like(masks[0])
    cands: list[int] = []
    for side in sides_of(plan.side):
        lung, uu = g.lungs[side], f.uu[side]
        e = lung_zone_edges(lung)
        if plan.detail == "apical":
            inset = depth * np.clip((e[1] + 0.02 - f.v) / 0.04, 0.0, 1.0)
        else:
            inset = depth * np.clip(np.minimum(f.v - e[1], e[3] - f.v) / 0.04, 0.0, 1.0)
        rind = masks[LUNG_IDS[side]] & ~lung_shape(lung, uu, f.v, f.dia[side], inset)
        c.density += 0.35 * rind
        shape |= rind
        cands += list(ZONE_LEAVES[side])
    return assign(plan, shape, cands, masks)
