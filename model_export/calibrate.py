"""Fit per-label temperatures and thresholds on validation data and ship them with the weights:
``python -m model_export.calibrate --weights weights --folder ../shared/data/kermany-cxr-224/train``

Through the service's engine (the ONNX graphs as served). Validation data, never the test data:
validation phantoms (their own seed range) for every label, and the *calibration half* of the
image folder's held-out patients (split by patient hash) for the labels the folder implies
(Pneumonia, Lung Opacity, No Finding; a real-image temperature wins for those). The other half
of those patients is the real test split for the expected calibration error (ECE), which is
reported before and after. Thresholds: each label's F1-optimal one first, then the
phantom-fitted ones moved jointly for the CE-14 micro F1 (``micro_f1_thresholds``).
``--tune-maps`` also chooses the map rules on validation phantoms (smoothing and area scale by
lung-box IoU, evidence smoothing and power by finding-phrase pointing); ``--parent-maps`` sets
the parent-map rule first. Writes ``calibration`` (and ``grounding``) into ``manifest.json``
(hashes renewed).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model_export.data import readers
from model_export.data.image_folder import split_key
from model_export.data.pipeline import FolderSource, PhantomSource, finding_masks, phantom_seeds
from model_export.metrics.calibration import (
    best_threshold,
    expected_calibration_error,
    fit_temperature,
    micro_f1_thresholds,
)
from service.imaging.preprocess import checked_views
from service.inference.engine import OrtEngine
from service.inference.heatmaps import MAP_INPUTS, PARENT_MAPS, MapRules, display_grid
from service.inference.manifest import MANIFEST_NAME, write_manifest

FOLDER_LABELS = ("Pneumonia", "Lung Opacity", "No Finding")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model_export.calibrate", description=__doc__)
    p.add_argument("--weights", default="weights")
    p.add_argument("--folder", default=None, help="labelled image folder (held-out part)")
    p.add_argument("--val-phantoms", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--dry-run", action="store_true", help="report only, keep the manifest")
    p.add_argument("--tune-maps", action="store_true", help="also choose smoothing / area scale")
    p.add_argument(
        "--parent-maps", choices=PARENT_MAPS, default=None, help="set the parent-map rule first"
    )
    p.add_argument("--parent-own-weight", type=float, default=None, help="with --parent-maps")
    p.add_argument(
        "--map-input", choices=MAP_INPUTS, default=None,
        help="set grounding.map_input: read the node maps from the image or its equalised copy",
    )  # fmt: skip
    p.add_argument(
        "--entity-views", default=None,
        help="set input.entity_views first (comma-separated, e.g. identity,flip): the entity "
        "logits are the mean over these views of each image (service.imaging.preprocess.VIEWS)",
    )  # fmt: skip
    p.add_argument(
        "--map-phantoms", type=int, default=None, help="--tune-maps phantoms (default: val / 4)"
    )
    return p.parse_args(argv)


def half_of(file_name: str) -> str:
    """'calibration' or 'test': a second, independent hash of the patient key."""
    digest = hashlib.sha1(("calibration:" + split_key(file_name)).encode()).digest()
    return "calibration" if digest[0] < 128 else "test"


def logits_of(engine: OrtEngine, images: Sequence[np.ndarray], batch: int) -> np.ndarray:
    """(N, 14) raw pathology logits."""
    out = []
    for k in range(0, len(images), batch):
        enc = engine.encode(engine.preprocess(list(images[k : k + batch])))
        if enc.logits is None:
            raise RuntimeError("engine returned no logits")
        out.append(enc.logits)
    return np.concatenate(out) if out else np.zeros((0, 14))


def folder_split(
    folder: Path, half: str, size: int
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Images, labels (N, 14) and label masks of one half of the folder's held-out patients."""
    studies = readers.held_out_split(readers.read_image_folder(folder), "test")
    src = FolderSource([s for s in studies if half_of(s.image_paths[0].name) == half], size)
    samples = [src[i] for i in range(len(src))]
    return ([np.asarray(s.image) for s in samples], np.array([s.labels for s in samples]),
            np.array([s.label_mask for s in samples]))  # fmt: skip


def fit(
    engine: OrtEngine, opts: argparse.Namespace
) -> tuple[list[float], list[float], dict[str, Any]]:
    """Temperatures and thresholds per label, and a report of what they were fitted on."""
    labels, size = list(engine.manifest.labels), engine.manifest.image_size
    src = PhantomSource(phantom_seeds("val", opts.val_phantoms), engine.manifest.read_size)
    ph = [src[i] for i in range(len(src))]
    z = logits_of(engine, [np.asarray(s.image) for s in ph], opts.batch_size)
    y = np.array([s.labels for s in ph])
    temps = [fit_temperature(z[:, c], y[:, c]) for c in range(len(labels))]
    probs = 1 / (1 + np.exp(-z / np.asarray(temps)))
    thresholds = [best_threshold(probs[:, c], y[:, c]) for c in range(len(labels))]
    fitted = dict.fromkeys(labels, f"{len(ph)} validation phantoms")
    if opts.folder:  # real images decide the labels they carry
        imgs, fy, fm = folder_split(Path(opts.folder), "calibration", size)
        fz = logits_of(engine, imgs, opts.batch_size)
        for name in FOLDER_LABELS:
            c, known = labels.index(name), fm[:, labels.index(name)] > 0
            temps[c] = fit_temperature(fz[known, c], fy[known, c])
            fp = 1 / (1 + np.exp(-fz[known, c] / temps[c]))
            thresholds[c] = best_threshold(fp, fy[known, c])
            fitted[name] = f"{int(known.sum())} real images (calibration half)"
    # the phantom-fitted thresholds are then moved jointly to maximise CE-14 micro F1
    free = [c for c, name in enumerate(labels) if "phantoms" in fitted[name]]
    probs = 1 / (1 + np.exp(-z / np.asarray(temps)))
    thresholds = micro_f1_thresholds(probs, y == 1, thresholds, free)
    return temps, thresholds, {"fitted_on": fitted, "thresholds_objective": "CE-14 micro F1"}


def real_ece(engine: OrtEngine, folder: Path, temps: Sequence[float], batch: int) -> dict[str, Any]:
    """ECE before / after on the test half of the folder's held-out patients."""
    labels = list(engine.manifest.labels)
    imgs, y, m = folder_split(folder, "test", engine.manifest.image_size)
    z = logits_of(engine, imgs, batch)
    out: dict[str, Any] = {"n": len(imgs)}
    for name in FOLDER_LABELS:
        c = labels.index(name)
        k = m[:, c] > 0
        raw, cal = 1 / (1 + np.exp(-z[k, c])), 1 / (1 + np.exp(-z[k, c] / temps[c]))
        out[name] = {"ece_before": expected_calibration_error(raw, y[k, c]),
                     "ece_after": expected_calibration_error(cal, y[k, c])}  # fmt: skip
    return out


SIGMAS = (0.0, 0.75, 1.5)  # smoothing candidates, patches (1.5 = the release)
AREA_SCALES = (1.0, 1.5, 2.0)


def tune_maps(engine: OrtEngine, n: int, batch: int) -> dict[str, Any]:
    """Smoothing sigma and membership area scale that maximise the right / left lung box IoU
    (box of pixels >= half the peak vs the mask's box), and the evidence power that maximises
    finding-phrase pointing, on ``n`` validation phantoms (encoded once)."""
    from model_export.grounding_eval import lung_box_scores

    src = PhantomSource(phantom_seeds("val", n), engine.manifest.image_size)
    phantoms = [src.phantom(i) for i in range(n)]
    encs = [
        engine.encode(engine.preprocess([ph.image for ph in phantoms[k : k + batch]]))
        for k in range(0, n, batch)
    ]
    maps = np.concatenate([e.node_attn for e in encs])
    scores: dict[str, float] = {}
    for sigma in SIGMAS:
        for scale in AREA_SCALES:
            rules = dataclasses.replace(engine.map_rules, smooth_sigma=sigma, area_scale=scale)
            ious = [
                iou
                for ph, m in zip(phantoms, maps, strict=True)
                for iou, _ in lung_box_scores(m, np.asarray(ph.masks, bool), rules)
            ]
            scores[f"{sigma}/{scale}"] = float(np.mean(ious))
    best = max(scores, key=lambda k: scores[k])
    sigma, scale = (float(x) for x in best.split("/"))
    out: dict[str, Any] = {"smooth_sigma": sigma, "area_scale": scale, "val_lung_box_iou": scores}
    if all(e.evidence is not None for e in encs):
        evidence = np.concatenate([e.evidence for e in encs if e.evidence is not None])
        chosen = dataclasses.replace(engine.map_rules, smooth_sigma=sigma, area_scale=scale)
        out |= tune_phrase_maps(engine, phantoms, maps, evidence, chosen)
    return out


EVIDENCE_POWERS = (1.0, 2.0, 4.0, 8.0)
EVIDENCE_SIGMAS = (0.0, 0.5, 1.0)
EVIDENCE_SUPPORTS = (0.0, 0.1, 0.2)  # fractions of the region's peak (0: evidence anywhere)


def tune_phrase_maps(
    engine: OrtEngine,
    phantoms: Sequence[Any],
    maps: np.ndarray,
    evidence: np.ndarray,
    rules: MapRules,
) -> dict[str, Any]:
    """The evidence smoothing sigma, power and region support that maximise finding-phrase
    pointing on validation phantoms (``maps`` (n, 32, g, g) and ``evidence`` (n, 14, g, g) of
    ``phantoms``) under the display ``rules``; ties go to the first in grid order (less
    smoothing, lower power, no support rule)."""
    from model_export.grounding_eval import finding_phrases
    from model_export.metrics.grounding import score_map
    from service.inference.grounding import phrase_density

    labels = list(engine.manifest.labels)
    grid = [(s, p, t) for s in EVIDENCE_SIGMAS for p in EVIDENCE_POWERS for t in EVIDENCE_SUPPORTS]
    found: dict[tuple[float, float, float], list[float]] = {k: [] for k in grid}
    none = np.zeros((maps.shape[-1] ** 2, 1), np.float32)  # no text fallback is needed here
    for ph, m, ev in zip(phantoms, maps, evidence, strict=True):
        for text, mask in finding_phrases(ph, finding_masks(ph), labels):
            for s, p, t in grid:
                d, _, _ = phrase_density(text, m, ev, none, none[0], labels, p, s, t)
                found[s, p, t].append(score_map(display_grid(d, rules), mask).pointing)
    if not any(found.values()):
        return {}
    means = {k: float(np.mean(v)) for k, v in found.items()}
    sigma, power, support = max(grid, key=lambda k: means[k])
    pointing = {"/".join(map(str, k)): v for k, v in means.items()}  # "sigma/power/support"
    return {"evidence_power": power, "evidence_sigma": sigma, "evidence_support": support,
            "val_phrase_pointing": pointing}  # fmt: skip


def _views_option(text: str | None) -> tuple[str, ...]:
    """``--entity-views`` -> view names (checked), or () when not given."""
    if not text:
        return ()
    return checked_views([v.strip() for v in text.split(",") if v.strip()])


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    root = Path(opts.weights)
    engine = OrtEngine.from_weights(root)
    if opts.parent_maps:
        own = opts.parent_own_weight or engine.map_rules.parent_own_weight
        engine.map_rules = dataclasses.replace(
            engine.map_rules, parent_maps=opts.parent_maps, parent_own_weight=own
        )
    views = _views_option(opts.entity_views)
    if views:
        engine.manifest = dataclasses.replace(engine.manifest, entity_views=views)
    if opts.map_input:
        engine.map_rules = dataclasses.replace(engine.map_rules, map_input=opts.map_input)
    temps, thresholds, info = fit(engine, opts)
    if opts.folder:
        info["real_test_ece"] = real_ece(engine, Path(opts.folder), temps, opts.batch_size)
    cal = {"temperature": [round(t, 4) for t in temps],
           "thresholds": [round(t, 8) for t in thresholds], **info}  # fmt: skip
    print(json.dumps(cal, indent=1))
    n_maps = opts.map_phantoms or opts.val_phantoms // 4
    tuned = tune_maps(engine, n_maps, opts.batch_size) if opts.tune_maps else {}
    if opts.map_input:
        tuned["map_input"] = opts.map_input
    if opts.parent_maps:
        tuned["parent_maps"] = opts.parent_maps
        tuned["parent_own_weight"] = engine.map_rules.parent_own_weight
    if tuned:
        print(json.dumps(tuned, indent=1))
    if not opts.dry_run:
        body = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
        body.pop("files", None)
        body["calibration"] = cal
        if views:
            body["input"]["entity_views"] = list(views)
        if tuned:
            body["grounding"] = {**body.get("grounding", {}), **tuned}
        write_manifest(root, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
