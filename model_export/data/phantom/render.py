"""Phantom rendering: anatomy -> attenuation map -> radiograph-like image (numpy + scipy).

Attenuation ("density") is additive in arbitrary units: soft tissue about 1, aerated lung
pulls it towards 0.3, bone adds 0.2-0.4. ``expose`` maps density to grey levels where
white = dense, as on a radiograph, then adds blur and quantum-like noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from model_export.data.phantom.geometry import (
    LEFT,
    RIGHT,
    SIDE_SIGN,
    Frame,
    Geometry,
    body_halfwidth,
    clavicle_centre,
    diaphragm_v,
)


@dataclass(frozen=True)
class Exposure:
    """Acquisition parameters of one phantom."""

    lo: float  # density mapped to black
    hi: float  # density mapped to white
    gamma: float  # tone curve exponent (> 1 darkens mid-tones)
    noise: float  # std of additive noise on [0, 1] grey levels
    blur: float  # Gaussian blur sigma, in pixels at 224 px (scaled with the size)


def sample_exposure(
    rng: np.random.Generator, noise: tuple[float, float], blur: tuple[float, float]
) -> Exposure:
    return Exposure(
        lo=rng.uniform(0.05, 0.15),
        hi=rng.uniform(1.15, 1.35),
        gamma=rng.uniform(0.8, 1.25),
        noise=rng.uniform(*noise),
        blur=rng.uniform(*blur),
    )


def band(d: np.ndarray, half: float | np.ndarray, soft: float) -> np.ndarray:
    """Soft-edged band: 1 where |d| < half, ramping to 0 over ``soft`` (canonical units)."""
    out: np.ndarray = np.clip((half - np.abs(d)) / soft + 0.5, 0.0, 1.0)
    return out


def segment_distance(
    u: np.ndarray, v: np.ndarray, a: tuple[float, float], b: tuple[float, float]
) -> np.ndarray:
    """Distance of every (u, v) to the segment a-b."""
    au, av = a
    du, dv = b[0] - au, b[1] - av
    t = np.clip(((u - au) * du + (v - av) * dv) / (du * du + dv * dv), 0.0, 1.0)
    eu, ev = u - au - t * du, v - av - t * dv
    return np.sqrt(eu * eu + ev * ev)


def bbox(mask: np.ndarray, pad: int = 0) -> tuple[slice, slice]:
    """Row and column slices enclosing the True pixels (empty slices if none)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    h, w = mask.shape
    return (
        slice(max(rows[0] - pad, 0), min(rows[-1] + 1 + pad, h)),
        slice(max(cols[0] - pad, 0), min(cols[-1] + 1 + pad, w)),
    )


N_RIBS = 11  # posterior ribs drawn per side


def _ribs(g: Geometry, f: Frame, lungs: np.ndarray) -> np.ndarray:
    """Posterior ribs (arcs, convex upwards) and fainter anterior ribs on both sides."""
    out = np.zeros_like(f.u)
    rows, _ = bbox(lungs, pad=int(0.05 / f.px))
    u, v = f.u[rows], f.v[rows]
    uu = np.abs(u)
    lat = 0.5 * (g.lungs[0].lat_u + g.lungs[1].lat_u) + 0.04
    t = np.clip(uu / lat, 0.0, 1.15)
    arc = -0.06 * t + 0.3 * t * t * np.sqrt(t)  # posterior course from the spinal origin
    fade = np.clip((uu - g.spine_w) / 0.02, 0.0, 1.0) * np.clip((1.12 - t) / 0.05, 0.0, 1.0)
    ant = 0.3 * (lat - uu)  # anterior ribs slope down towards the midline
    ant_fade = np.clip((uu - 0.12) / 0.06, 0.0, 1.0) * fade
    # Ribs 0..10 never overlap (spacing > width), so each pixel only needs its nearest rib.
    post = v - g.rib_v0 - arc
    k = np.clip(np.rint(post / g.rib_dv), 0, N_RIBS - 1)
    w = g.rib_w * (1.0 + 0.02 * k - 0.2 * (k == 0))  # the first rib is thinner
    a = np.abs(post - k * g.rib_dv)
    c = (a - 0.85 * w) / (0.3 * w)
    acc = fade * (0.075 * band(a, w, f.px) + 0.06 * np.exp(-np.minimum(c * c, 40.0)))
    front = v - g.rib_v0 - 0.13 - ant
    ka = np.clip(np.rint(front / g.rib_dv), 0, N_RIBS - 1)
    wa = 0.8 * g.rib_w * (1.0 + 0.02 * ka - 0.2 * (ka == 0))
    acc += 0.045 * ant_fade * band(front - ka * g.rib_dv, wa, 2 * f.px)
    out[rows] = acc
    return out


def _markings(g: Geometry, f: Frame, masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lung markings: tapering vessels radiating from each hilum (an angular random profile)."""
    out = np.zeros_like(f.u)
    bins = 720
    theta = np.linspace(-np.pi, np.pi, bins, endpoint=False, dtype=np.float32)
    for side, lung_id in ((RIGHT, 5), (LEFT, 6)):
        rows, cols = bbox(masks[lung_id])
        uu, v = f.uu[side][rows, cols], f.v[rows, cols]
        hu, hv = g.lungs[side].hilum
        du, dv = uu - hu, v - hv
        r = np.sqrt(du * du + dv * dv)
        wave = 0.1 * np.sin(25.0 * r + rng.uniform(0, 6.3)) + 0.06 * np.sin(61.0 * r)
        ang = np.arctan2(dv, du) + wave
        n = 70
        centre = rng.uniform(-np.pi, np.pi, n)[:, None]
        diff = theta[None, :] - centre.astype(np.float32)  # wrapped to [-pi, pi] below
        diff -= np.float32(2 * np.pi) * np.round(diff * np.float32(0.5 / np.pi))
        width = rng.uniform(0.01, 0.03, n).astype(np.float32)[:, None]
        z = np.minimum((diff / width) ** 2, np.float32(40.0))  # no denormals in exp
        prof = (rng.uniform(0.3, 1.0, n).astype(np.float32)[:, None] * np.exp(-z)).sum(0)
        idx = ((ang + np.pi) * (bins / (2 * np.pi))).astype(np.int32) % bins
        radial = np.exp(-r / 0.13) * np.clip(r / 0.02, 0.0, 1.0)
        hilum = np.exp(-(r * r) / 0.0012)
        vessels = prof[idx] * radial + 0.6 * hilum
        out[rows, cols] += masks[lung_id][rows, cols] * vessels
    return out


def texture(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth zero-mean random field with roughly ``cells`` blobs across the image."""
    low = rng.standard_normal((cells + 1, cells + 1), dtype=np.float32)
    pos = (np.arange(size, dtype=np.float32) + 0.5) * (cells / size)
    i0 = np.minimum(pos.astype(np.int32), cells - 1)
    w = (pos - i0)[:, None]
    rows = low[i0] * (1.0 - w) + low[i0 + 1] * w  # (size, cells + 1), no BLAS threads
    out: np.ndarray = rows[:, i0] * (1.0 - w.T) + rows[:, i0 + 1] * w.T
    return out


def lung_air(g: Geometry, f: Frame, masks: np.ndarray) -> np.ndarray:
    """Aerated lung depth (H, W): most in the mid-lateral lung, less at the edges and bases."""
    air = np.zeros_like(f.u)
    for side, lung_id in ((RIGHT, 5), (LEFT, 6)):
        lung, uu, v = g.lungs[side], f.uu[side], f.v
        lat = np.clip((lung.lat_u - uu) / 0.06, 0.4, 1.0)
        top = np.clip((v - lung.apex_v) / 0.1, 0.45, 1.0)
        low = np.clip((f.dia[side] - v) / 0.12, 0.55, 1.0)
        air += masks[lung_id] * (0.68 * lat * top * low)
    return air


def anatomy_density(
    g: Geometry, f: Frame, masks: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(density without lung markings, lung markings), each (H, W) float32."""
    u, v, px = f.u, f.v, f.px
    hw = body_halfwidth(g, v)
    depth = np.clip(1 - (u / hw) ** 2, 0, 1)
    d = band(u, hw, 4 * px) * (0.15 + 0.85 * depth ** np.float32(0.75))  # torso thickness
    d -= np.minimum(lung_air(g, f, masks), 0.85 * d)
    d += 0.03 * masks[22] + 0.04 * (masks[23] & ~masks[22]) - 0.03 * masks[25]
    d -= 0.09 * masks[21]
    for side in (RIGHT, LEFT):  # main bronchi
        hu, hv = g.lungs[side].hilum
        dist = segment_distance(u, v, (g.trachea_u, g.carina_v), (SIDE_SIGN[side] * hu, hv))
        d -= 0.07 * band(dist, 0.7 * g.trachea_w, 2 * px) * (v > g.carina_v - 0.01)
    d += 0.05 * masks[4]
    bu, bv, br = g.bubble
    dia = float(diaphragm_v(g.lungs[LEFT], np.array(bu)))
    eu, ev = (u - bu) / (1.3 * br), (v - dia - bv) / br
    d -= 0.15 * np.clip(1.5 - 1.5 * (eu * eu + ev * ev), 0.0, 1.0) * masks[4]
    verteb = 0.85 + 0.15 * np.cos(2 * np.pi * v / 0.05)
    d += 0.07 * band(u, g.spine_w, 6 * px) * verteb
    d += _clavicles(g, f)
    d += _ribs(g, f, masks[1]) * (0.35 + 0.65 * masks[1])
    d += 0.035 * texture(rng, u.shape[0], 12) * (masks[1] | masks[4])
    return d, _markings(g, f, masks, rng)


def _clavicles(g: Geometry, f: Frame) -> np.ndarray:
    t, cv = clavicle_centre(g, f.u)
    half = g.clav_w * (1.3 - 0.4 * t)
    d = np.abs(f.v - cv)
    ends = np.clip(t / 0.03, 0, 1) * np.clip((1 - t) / 0.03, 0, 1)
    if g.fracture is not None:  # lucent fracture line across the fractured clavicle
        side, t_f, _ = g.fracture
        on_side = f.u < 0 if side == RIGHT else f.u >= 0
        ends = ends * (1.0 - on_side * band(t - t_f, 0.008, 0.01))
    cortex = np.exp(-(((d - 0.8 * half) / (0.3 * half)) ** 2))
    out: np.ndarray = (0.14 * band(d, half, f.px) + 0.1 * cortex) * ends
    return out


def expose(density: np.ndarray, e: Exposure, rng: np.random.Generator) -> np.ndarray:
    """Density -> (H, W) float32 grey image in [0, 1]: tone curve, blur, noise."""
    size = density.shape[0]
    img = np.clip((density - e.lo) / (e.hi - e.lo), 0.0, 1.0) ** e.gamma
    sigma = e.blur * size / 224.0
    if sigma > 0.2:
        img = ndimage.gaussian_filter(img, sigma, mode="nearest")
    img = img + np.float32(e.noise) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)
