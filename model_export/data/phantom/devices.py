"""Phantom support devices (tubes and lines), clavicle fracture and whole-node findings."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from model_export.data.phantom.geometry import (
    LEFT,
    RIGHT,
    SIDE_SIGN,
    Frame,
    Geometry,
    cavoatrial_point,
    clavicle_v,
    diaphragm_full,
    diaphragm_v,
    to_pixels,
)
from model_export.data.phantom.plan import (
    Canvas,
    FindingPlan,
    Found,
    Rng,
    assign,
)


def fracture(
    plan: FindingPlan, g: Geometry, f: Frame, masks: np.ndarray, rng: Rng, c: Canvas
) -> Found:
    if g.fracture is None:
        return None
    side, t_f, _ = g.fracture
    uu = 0.03 + t_f * (g.clav_len - 0.03)
    cu, cv = SIDE_SIGN[side] * uu, float(clavicle_v(g, np.array(uu)))
    du, dv = f.u - cu, f.v - cv
    near = du * du + dv * dv <= 0.035**2
    return assign(plan, near, [30 if side == RIGHT else 31], masks)


def whole_node(plan: FindingPlan, masks: np.ndarray, nid: int) -> Found:
    return assign(plan, masks[nid], [nid], masks)


def _polyline(g: Geometry, f: Frame, pts: list[tuple[float, float]], width: int) -> np.ndarray:
    """Boolean (H, W) trace of a canonical polyline, ``width`` pixels wide."""
    size = f.u.shape[0]
    us, vs = [], []
    for (u0, v0), (u1, v1) in zip(pts[:-1], pts[1:], strict=True):
        n = int(np.hypot(u1 - u0, v1 - v0) / (0.3 * f.px)) + 2
        us.append(np.linspace(u0, u1, n))
        vs.append(np.linspace(v0, v1, n))
    rows, cols = to_pixels(g, np.concatenate(us), np.concatenate(vs), size)
    r, q = np.rint(rows).astype(np.int64), np.rint(cols).astype(np.int64)
    ok = (r >= 0) & (r < size) & (q >= 0) & (q < size)
    out = np.zeros((size, size), dtype=bool)
    out[r[ok], q[ok]] = True
    if width > 1:
        out = ndimage.binary_dilation(out, iterations=width // 2)
    return out


def device(
    plan: FindingPlan, g: Geometry, f: Frame, masks: np.ndarray, rng: Rng, c: Canvas
) -> Found:
    tu, size = g.trachea_u, f.u.shape[0]
    width = max(1, round(2 * size / 224))
    if plan.detail == "ett":
        above = rng.uniform(0.09, 0.17)  # 3-6 cm above the carina (chest height ~35 cm)
        pts, cands = [(tu, -0.1), (tu, g.carina_v - above)], [21]
        plan = FindingPlan(plan.label, plan.side, plan.severity, f"ett:{round(above * 35)}")
        sheath = _polyline(g, f, pts, max(3, round(6 * size / 224)))
        c.density += 0.06 * sheath
    elif plan.detail == "ngt":
        bu, bv, _ = g.bubble
        u0 = tu + 0.6 * g.trachea_w
        dia0 = float(diaphragm_full(g, np.array(0.03)))
        dia_b = float(diaphragm_v(g.lungs[LEFT], np.array(bu)))
        pts = [
            (u0, -0.1),
            (u0, g.carina_v),
            (0.03, dia0 - 0.02),
            (0.7 * bu, dia_b + bv),
            (bu + 0.03, dia_b + bv + 0.05),
        ]
        cands = [4, 21, 22, 25, 26]
    else:
        caj_u, caj_v = cavoatrial_point(g)
        w_r = g.um_w[RIGHT]
        tip = caj_v if rng.random() < 0.5 else 0.5 * (g.clav_med_v + caj_v)
        pts = [
            (-(w_r + 0.05), -0.1),
            (-(w_r + 0.02), g.clav_med_v - 0.02),
            (caj_u, g.clav_med_v + 0.03),
            (caj_u, tip),
        ]
        cands = [22, 24, 27, 28]
        plan = FindingPlan(
            plan.label, plan.side, plan.severity, "cvc:caj" if tip == caj_v else "cvc:svc"
        )
    line = _polyline(g, f, pts, width)
    c.density += 0.22 * line
    return assign(plan, line, cands, masks, min_frac=0.02)
