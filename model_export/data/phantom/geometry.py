"""Phantom anatomy: random geometry and the shapes the masks are made of (numpy).

All shapes live in a canonical patient frame: ``u`` is the horizontal offset from the midline
(negative = image left = the patient's right, radiological convention) and ``v`` runs from the
top (0) to the bottom (1) of a standard-sized chest. ``make_grid`` maps pixel centres into this
frame through the sampled patient shift, scale and rotation, so every mask is an exact
function of (geometry, image size). Parents are built as unions of (or supersets of) their
children, so masks nest exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RIGHT, LEFT = 0, 1  # lung / side index; the right lung is on the image left
SIDE_SIGN = (-1.0, 1.0)  # u = SIDE_SIGN[side] * outward distance from the midline
# Lung-zone boundaries as fractions of lung height (apex -> CP angle): apical|upper|mid|lower.
ZONE_SPLITS = (0.14, 0.38, 0.62)
#: Leaf node ids per side in the order apical, upper, mid, lower, hilar, CP angle, hemidiaphragm.
LUNG_LEAVES = ((11, 7, 8, 9, 10, 12, 13), (18, 14, 15, 16, 17, 19, 20))
ZONE_LEAVES = ((11, 7, 8, 9), (18, 14, 15, 16))  # apical, upper, mid, lower


@dataclass(frozen=True)
class LungGeom:
    """One lung in canonical units; ``*_u`` are outward distances from the midline."""

    apex_v: float  # height of the apex (lung top)
    apex_u: float  # outward position of the apex
    k_apex: float  # curvature of the apical dome (v rises by k * du^2)
    lat_u: float  # lateral border (inner chest wall)
    taper: float  # inward narrowing of the lateral border towards the CP angle
    cp_v: float  # height of the costophrenic angle (lowest lung point)
    dome_v: float  # height of the hemidiaphragm dome peak
    dome_u: float  # outward position of the dome peak
    hilum: tuple[float, float]  # (outward u, v) of the hilum centre


@dataclass(frozen=True)
class Geometry:
    """Every random anatomical parameter of one phantom (canonical units, radians)."""

    cx: float  # image x of the midline at the image centre row (0..1)
    cy: float  # image y that maps to v = 0.5
    scale: float  # patient size: canonical unit -> image fraction
    angle: float  # in-plane rotation (radians)
    body_w: float  # half-width of the torso
    neck_w: float  # half-width of the neck
    shoulder_v: float  # height where the shoulders reach full width
    lungs: tuple[LungGeom, LungGeom]  # right, left
    um_top: float  # top of the upper mediastinum
    um_w: tuple[float, float]  # upper-mediastinum half-width on the right / left
    trachea_u: float  # trachea centre
    trachea_w: float  # trachea half-width
    carina_v: float  # height of the carina
    knob_v: float  # aortic knob height
    knob_r: float  # aortic knob radius
    svc_w: float  # SVC width (beyond the right mediastinal border)
    heart_u: float  # heart ellipse centre u (left of the midline, > 0)
    heart_v: float  # heart ellipse centre v
    heart_a: float  # heart semi-axis across (sets the cardiothoracic ratio)
    heart_b: float  # heart semi-axis along
    heart_tilt: float  # heart long-axis tilt (radians)
    spine_w: float  # spine half-width
    clav_med_v: float  # clavicle height at the sternal end
    clav_lat_v: float  # clavicle height at the acromial end
    clav_len: float  # outward extent of the clavicle
    clav_w: float  # clavicle half-thickness
    rib_v0: float  # height of the first posterior rib at the spine
    rib_dv: float  # vertical spacing of posterior ribs
    rib_w: float  # rib half-width
    bubble: tuple[float, float, float]  # gastric bubble (u, v, radius)
    fracture: tuple[int, float, float] | None = None  # clavicle (side, position 0..1, step)


@dataclass(frozen=True)
class AnatomyChanges:
    """Departures from normal anatomy that findings require."""

    heart_scale: float = 1.0  # > 1 enlarges the heart (cardiomegaly)
    mediastinum_scale: float = 1.0  # > 1 widens the upper mediastinum
    fracture: tuple[int, float, float] | None = None  # clavicle (side, position 0..1, step)


def _lung(rng: np.random.Generator, side: int) -> LungGeom:
    apex_v = rng.uniform(0.12, 0.17)
    lat_u = rng.uniform(0.36, 0.41)
    cp_v = rng.uniform(0.72, 0.79) + (0.02 if side == LEFT else 0.0)
    dome_v = cp_v - rng.uniform(0.08, 0.13)
    hil_v = apex_v + 0.5 * (cp_v - apex_v) - (0.02 if side == LEFT else 0.0)
    return LungGeom(
        apex_v=apex_v,
        apex_u=rng.uniform(0.15, 0.19),
        k_apex=rng.uniform(4.0, 6.0),
        lat_u=lat_u,
        taper=rng.uniform(0.01, 0.03),
        cp_v=cp_v,
        dome_v=dome_v,
        dome_u=rng.uniform(0.17, 0.22),
        hilum=(rng.uniform(0.09, 0.11), hil_v),
    )


def sample_geometry(
    rng: np.random.Generator,
    rotation_deg: float,
    scale_range: tuple[float, float],
    changes: AnatomyChanges | None = None,
) -> Geometry:
    """Random anatomy, enlarged or fractured as ``changes`` asks."""
    ch = changes or AnatomyChanges()
    heart_scale, mediastinum_scale = ch.heart_scale, ch.mediastinum_scale
    lungs = (_lung(rng, RIGHT), _lung(rng, LEFT))
    um_w = rng.uniform(0.045, 0.06)
    um = (um_w * mediastinum_scale, (um_w + rng.uniform(0.0, 0.01)) * mediastinum_scale)
    apex = min(lungs[0].apex_v, lungs[1].apex_v)
    rot = rotation_deg
    heart_a = rng.uniform(0.17, 0.2) * heart_scale
    return Geometry(
        cx=0.5 + rng.normal(0.0, 0.012),
        cy=0.5 + rng.normal(0.0, 0.015),
        scale=rng.uniform(*scale_range),
        angle=float(np.deg2rad(np.clip(rng.normal(0.0, rotation_deg / 2), -rot, rot))),
        body_w=rng.uniform(0.45, 0.5),
        neck_w=rng.uniform(0.09, 0.12),
        shoulder_v=rng.uniform(0.16, 0.24),
        lungs=lungs,
        um_top=apex - 0.03,
        um_w=um,
        trachea_u=rng.uniform(-0.008, 0.004),
        trachea_w=rng.uniform(0.013, 0.017),
        carina_v=rng.uniform(0.34, 0.39),
        knob_v=rng.uniform(0.27, 0.31),
        knob_r=rng.uniform(0.03, 0.04) * (1.0 + 0.5 * (mediastinum_scale - 1.0)),
        svc_w=rng.uniform(0.015, 0.025),
        heart_u=rng.uniform(0.05, 0.075) + 0.3 * (heart_a - 0.185),
        heart_v=rng.uniform(0.58, 0.62),
        heart_a=heart_a,
        heart_b=rng.uniform(0.15, 0.17) * (1.0 + 0.4 * (heart_scale - 1.0)),
        heart_tilt=np.deg2rad(rng.uniform(30.0, 50.0)),
        spine_w=rng.uniform(0.03, 0.04),
        clav_med_v=rng.uniform(0.19, 0.23),
        clav_lat_v=rng.uniform(0.10, 0.15),
        clav_len=rng.uniform(0.34, 0.38),
        clav_w=rng.uniform(0.013, 0.017),
        rib_v0=rng.uniform(0.09, 0.12),
        rib_dv=rng.uniform(0.068, 0.078),
        rib_w=rng.uniform(0.012, 0.016),
        bubble=(rng.uniform(0.12, 0.22), rng.uniform(0.04, 0.08), rng.uniform(0.035, 0.06)),
        fracture=ch.fracture,
    )


@dataclass(frozen=True)
class Frame:
    """Per-pixel canonical coordinates of one image, with the quantities every shape reuses."""

    u: np.ndarray  # (H, W) float32 signed offset from the midline
    v: np.ndarray  # (H, W) float32 height
    uu: tuple[np.ndarray, np.ndarray]  # outward distance towards the right / left lung
    dia: tuple[np.ndarray, np.ndarray]  # right / left hemidiaphragm height at each column
    dia_full: np.ndarray  # hemidiaphragm height on the pixel's own side
    px: float  # one pixel in canonical units


def make_frame(g: Geometry, size: int) -> Frame:
    """Canonical coordinates of every pixel centre of a ``size`` x ``size`` image."""
    t = (np.arange(size, dtype=np.float32) + 0.5) / size
    dx = (t - np.float32(g.cx))[None, :]
    dy = (t - np.float32(g.cy))[:, None]
    c, s = np.float32(np.cos(g.angle) / g.scale), np.float32(np.sin(g.angle) / g.scale)
    u = c * dx + s * dy
    v = (c * dy - s * dx) + np.float32(0.5)
    uu = (-u, u)
    dia = (diaphragm_v(g.lungs[RIGHT], uu[RIGHT]), diaphragm_v(g.lungs[LEFT], uu[LEFT]))
    full = dia[LEFT].copy()
    np.copyto(full, dia[RIGHT], where=u < 0)
    return Frame(u, v, uu, dia, full, 1.0 / (size * g.scale))


def to_pixels(g: Geometry, u: np.ndarray, v: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """Inverse of ``make_grid``: canonical points -> (row, col) float pixel coordinates."""
    c, s = np.cos(g.angle) * g.scale, np.sin(g.angle) * g.scale
    x = g.cx + c * u - s * (v - 0.5)
    y = g.cy + s * u + c * (v - 0.5)
    return y * size - 0.5, x * size - 0.5


def diaphragm_v(lung: LungGeom, uu: np.ndarray) -> np.ndarray:
    """Height of the hemidiaphragm at outward distance ``uu`` (dome, CP angle laterally)."""
    t_lat = np.minimum((uu - lung.dome_u) / (lung.lat_u - lung.dome_u), 1.15)
    out = np.array(lung.dome_v + 0.04 * ((lung.dome_u - uu) / lung.dome_u) ** 2)  # medial
    lateral = lung.cp_v - (lung.cp_v - lung.dome_v) * (1.0 - t_lat * t_lat)
    np.copyto(out, lateral, where=uu >= lung.dome_u)
    return out


def diaphragm_full(g: Geometry, u: np.ndarray) -> np.ndarray:
    """Hemidiaphragm height across the whole width (right for u < 0, left for u >= 0)."""
    out = diaphragm_v(g.lungs[LEFT], u)
    np.copyto(out, diaphragm_v(g.lungs[RIGHT], -u), where=u < 0)
    return out


def lung_shape(
    lung: LungGeom, uu: np.ndarray, v: np.ndarray, dia: np.ndarray, inset: float | np.ndarray = 0.0
) -> np.ndarray:
    """Lung outline before the mediastinum is cut out (``dia``: diaphragm height at ``uu``);
    ``inset`` shrinks it from the apex and the lateral wall (collapsed lung, pleural rind)."""
    top = lung.apex_v + inset + lung.k_apex * (uu - lung.apex_u) ** 2
    t = np.clip((v - 0.5) / (lung.cp_v - 0.5), 0.0, 1.0)
    up = np.maximum(0.55 - v, 0.0)
    lat = lung.lat_u - inset - lung.taper * t * t - 0.4 * up * up
    return (uu > 0.0) & (v >= top) & (uu <= lat) & (v <= dia)


def ellipse(u: np.ndarray, v: np.ndarray, cu: float, cv: float, a: float, b: float) -> np.ndarray:
    """Axis-aligned filled ellipse."""
    du, dv = (u - cu) / a, (v - cv) / b
    return du * du + dv * dv <= 1.0


def heart_shape(g: Geometry, u: np.ndarray, v: np.ndarray, dia_full: np.ndarray) -> np.ndarray:
    """Tilted heart ellipse, cut off below by the hemidiaphragms."""
    c, s = np.cos(g.heart_tilt), np.sin(g.heart_tilt)
    du, dv = u - g.heart_u, v - g.heart_v
    a, b = (c * du + s * dv) / g.heart_a, (c * dv - s * du) / g.heart_b
    out: np.ndarray = (a * a + b * b <= 1.0) & (v <= dia_full)
    return out


def heart_top(g: Geometry, u: float) -> float:
    """Highest v of the heart at column ``u`` (used to place the cavoatrial junction)."""
    vs = np.linspace(0.3, 0.85, 400)
    us = np.full_like(vs, u)
    inside = heart_shape(g, us, vs, diaphragm_full(g, us))
    return float(vs[inside][0]) if inside.any() else g.heart_v


def body_halfwidth(g: Geometry, v: np.ndarray) -> np.ndarray:
    """Half-width of the torso outline (neck at the top, widening over the shoulders)."""
    t = np.clip(v / g.shoulder_v, 0.0, 1.0)
    return g.neck_w + (g.body_w - g.neck_w) * np.sqrt(t * (2.0 - t))


def clavicle_v(g: Geometry, uu: np.ndarray) -> np.ndarray:
    """Clavicle centre line height at outward distance ``uu`` (gentle S curve)."""
    t = (uu - 0.03) / (g.clav_len - 0.03)
    return g.clav_med_v + (g.clav_lat_v - g.clav_med_v) * t + 0.012 * np.sin(2 * np.pi * t)


def cavoatrial_point(g: Geometry) -> tuple[float, float]:
    """(u, v) where the SVC meets the right atrium."""
    caj_u = -(g.um_w[RIGHT] + 0.5 * g.svc_w)
    return caj_u, heart_top(g, caj_u) + 0.015


def lung_zone_edges(lung: LungGeom) -> tuple[float, ...]:
    """v boundaries of the apical | upper | mid | lower zones (outermost open-ended)."""
    height = lung.cp_v - lung.apex_v
    return (-1.0, *(lung.apex_v + frac * height for frac in ZONE_SPLITS), 2.0)


def clavicle_t(g: Geometry, uu: np.ndarray) -> np.ndarray:
    """Position along the clavicle: 0 at the sternal end, 1 at the acromial end."""
    return (uu - 0.03) / (g.clav_len - 0.03)


def clavicle_centre(g: Geometry, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(position along the clavicle, centre-line height) for both clavicles, with the lateral
    fragment of a fractured clavicle displaced downwards."""
    uu = np.abs(u)
    t, cv = clavicle_t(g, uu), clavicle_v(g, uu)
    if g.fracture is not None:
        side, t_f, step = g.fracture
        on_side = u < 0 if side == RIGHT else u >= 0
        cv = cv + step * ((t > t_f) & on_side)
    return t, cv
