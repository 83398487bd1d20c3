"""Exact boolean masks of the 32 anatomy nodes from a phantom's geometry (numpy).

Parents are built as unions of (or supersets of) their children, so masks nest exactly; the
shapes themselves (lungs, heart, clavicles, diaphragm) are in ``geometry``.
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
    body_halfwidth,
    cavoatrial_point,
    clavicle_centre,
    ellipse,
    heart_shape,
    lung_shape,
    lung_zone_edges,
)
from model_export.ssacl.anatomy import NUM_NODES


def _mediastinum(g: Geometry, f: Frame) -> dict[int, np.ndarray]:
    u, v = f.u, f.v
    heart = heart_shape(g, u, v, f.dia_full)
    trachea = (np.abs(u - g.trachea_u) <= g.trachea_w) & (v <= g.carina_v)
    grow = np.maximum(v - g.knob_v, 0.0)  # pulmonary trunk / right border widen downwards
    upper = (v >= g.um_top) & (v <= g.heart_v)
    taper = 0.8 + 0.2 * np.clip((v - g.um_top) / (g.knob_v - g.um_top), 0.0, 1.0)
    upper &= (u >= -g.um_w[RIGHT] * taper - 0.15 * grow) & (u <= g.um_w[LEFT] * taper + 0.35 * grow)
    knob = ellipse(u, v, g.um_w[LEFT] + 0.3 * g.knob_r, g.knob_v, g.knob_r, g.knob_r)
    caj_u, caj_v = cavoatrial_point(g)
    svc = (
        (u >= -(g.um_w[RIGHT] + g.svc_w))
        & (u <= -(g.um_w[RIGHT] - 0.015))
        & (v >= g.clav_med_v)
        & (v <= caj_v + 0.005)
    )
    carina = ellipse(u, v, g.trachea_u, g.carina_v + 0.005, 0.035, 0.025)
    ra = heart & (u <= -0.03) & (v >= caj_v + 0.015)
    caj = heart & ellipse(u, v, caj_u, caj_v, 0.035, 0.03)
    return {21: trachea, 22: upper, 23: knob, 24: svc, 25: heart, 26: carina, 27: ra, 28: caj}


def _lung_leaves(g: Geometry, side: int, f: Frame, cut: np.ndarray) -> list[np.ndarray]:
    lung, uu, v = g.lungs[side], f.uu[side], f.v
    shape = lung_shape(lung, uu, v, f.dia[side]) & ~cut
    edges = lung_zone_edges(lung)
    zones = [shape & (v >= lo) & (v < hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    hu, hv = lung.hilum
    hilar = shape & ellipse(uu, v, hu, hv, 0.07, 0.08)
    cp = shape & (uu >= lung.lat_u - 0.09) & (v >= lung.cp_v - 0.09)
    hemi = shape & (v >= f.dia[side] - 0.03)
    return [*zones, hilar, cp, hemi]


def anatomy_masks(g: Geometry, f: Frame) -> np.ndarray:
    """(32, H, W) bool masks in anatomy node-id order; every child lies inside its parent."""
    masks = np.zeros((NUM_NODES, *f.u.shape), dtype=bool)
    for nid, m in _mediastinum(g, f).items():
        masks[nid] = m
    masks[2] = np.logical_or.reduce(masks[21:27])
    uu = np.abs(f.u)
    t, cv = clavicle_centre(g, f.u)
    clav = (np.abs(f.v - cv) <= g.clav_w * (1.3 - 0.4 * t)) & (t >= 0) & (t <= 1)
    masks[29] = uu <= g.spine_w
    masks[30], masks[31] = clav & (f.u < 0), clav & (f.u >= 0)
    masks[3] = masks[29] | masks[30] | masks[31]
    for side, lung_id in ((RIGHT, 5), (LEFT, 6)):
        masks[list(LUNG_LEAVES[side])] = np.stack(_lung_leaves(g, side, f, masks[2]))
        masks[lung_id] = np.logical_or.reduce(masks[list(ZONE_LEAVES[side])])
    masks[1] = masks[5] | masks[6]
    body = uu <= body_halfwidth(g, f.v)
    masks[4] = body & (f.v > f.dia_full) & ~masks[2] & ~masks[1]
    masks[0] = masks[1] | masks[2] | masks[3] | masks[4]
    return masks
