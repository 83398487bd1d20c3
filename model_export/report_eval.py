"""Report evaluation of an exported weights folder through the service's engine:
``python -m model_export.report_eval --weights weights --out runs/reports.json``.

Test phantoms (never trained on): CE-14 / CE-5 of the generated reports (our labeler) against
the phantom truth, NLG against the references, entity AUROC and ECE of the calibrated entity
probabilities, and the coherence counts: sentences the engine dropped (repeated, contradicting)
and repeats / contradictions left in the final reports. Real images: pneumonia AUROC and ECE on
the test half of the image folder's held-out patients (``calibrate.half_of``).
``--truth-entities`` prompts the decoder with each phantom's true findings instead of the
entity head's: the CE ceiling that better detection alone could reach with this decoder.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from model_export.calibrate import FOLDER_LABELS, folder_split
from model_export.data.pipeline import PhantomSource, phantom_seeds
from model_export.metrics.calibration import expected_calibration_error
from model_export.metrics.classification import auroc_per_label
from model_export.metrics.clinical import ce_scores
from model_export.metrics.nlg import MeteorUnavailableError, nlg_scores
from model_export.ssacl.text import split_sentences
from model_export.ssacl.text.labeler import positive_vector
from service.inference.coherence import repetition_contradiction_counts
from service.inference.engine import OrtEngine
from service.inference.types import GenerateOptions


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model_export.report_eval", description=__doc__)
    p.add_argument("--weights", default="weights")
    p.add_argument("--out", required=True)
    p.add_argument("--phantom-test", type=int, default=500)
    p.add_argument(
        "--phantom-start", type=int, default=0, help="skip the first K test phantoms (a fresh set)"
    )
    p.add_argument(
        "--phantom-size", type=int, default=None,
        help="render test phantoms at this side (default: the largest the encoder reads)",
    )  # fmt: skip
    p.add_argument("--beams", type=int, default=3)
    p.add_argument("--folder", default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--truth-entities", action="store_true", help="prompt with the true findings (ceiling)"
    )
    return p.parse_args(argv)


def _nlg(texts: list[str], refs: list[str]) -> dict[str, float]:
    try:
        return nlg_scores(texts, refs, meteor=True)
    except MeteorUnavailableError:
        return nlg_scores(texts, refs, meteor=False)


class _TruthEntities:
    """Stands in for ``OrtEngine.entities`` during one batch: the rows' true findings in
    order (``engine.generate`` asks once per image, in batch order)."""

    def __init__(self, rows: Sequence[Sequence[float]], labels: Sequence[str]) -> None:
        self._rows = iter(
            tuple(c for c, v in zip(labels, r, strict=True) if v == 1 and c != "No Finding")
            for r in rows
        )

    def __call__(self, probs: np.ndarray) -> tuple[str, ...]:
        return next(self._rows)


def evaluate_phantoms(
    engine: OrtEngine, n: int, beams: int, batch: int, truth_entities: bool = False,
    start: int = 0, size: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """CE, NLG, AUROC, ECE and coherence counts on ``n`` test phantoms from the ``start``-th,
    rendered at ``size`` px (None: ``manifest.read_size``)."""
    src = PhantomSource(phantom_seeds("test", n, start), size or engine.manifest.read_size)
    opts = GenerateOptions(beam_size=beams, heatmaps=False)
    texts, refs, truth, probs = [], [], [], []
    dropped: Counter[str] = Counter()
    left: Counter[str] = Counter()
    entities = engine.entities  # restored below: --truth-entities replaces it per batch
    for k in range(0, n, batch):
        samples = [src[i] for i in range(k, min(k + batch, n))]
        if truth_entities:
            oracle = _TruthEntities([s.labels for s in samples], engine.manifest.labels)
            engine.entities = oracle  # type: ignore[method-assign]
        reports = engine.generate([np.asarray(s.image) for s in samples], opts)
        for s, r in zip(samples, reports, strict=True):
            texts.append(r.text)
            refs.append(str(s.report))
            truth.append(s.labels)
            probs.append([r.entity_probs[name] for name in engine.manifest.labels])
            dropped.update(r.dropped)
            left.update(repetition_contradiction_counts(split_sentences(r.text)))
    engine.entities = entities  # type: ignore[method-assign]
    t, p = (np.array(truth) == 1).astype(int), np.array(probs)
    labels = list(engine.manifest.labels)
    return {
        "n": n,
        "clinical_vs_truth": ce_scores(np.array([positive_vector(x) for x in texts]), t),
        "nlg": _nlg(texts, refs),
        "entity_auroc": auroc_per_label(p, t, labels),
        "entity_ece": {
            c: expected_calibration_error(p[:, i], t[:, i]) for i, c in enumerate(labels)
        },
        "dropped_by_engine": dict(dropped),
        "left_in_reports": dict(left),
        "examples": [
            {"generated": a, "reference": b} for a, b in zip(texts[:5], refs[:5], strict=True)
        ],
    }


#: Acquisition shifts applied to the real test half (image in [0, 1] -> image).
SHIFTS: dict[str, Any] = {
    "as acquired": lambda x: x,
    "gamma 0.6 (brighter)": lambda x: np.clip(x, 0, 1) ** 0.6,
    "gamma 1.6 (darker)": lambda x: np.clip(x, 0, 1) ** 1.6,
    "blur 1.5 px + noise 0.03": lambda x: np.clip(
        ndimage.gaussian_filter(x, 1.5) + np.random.default_rng(0).normal(0, 0.03, x.shape), 0, 1
    ).astype(np.float32),
    "zoomed out to 80%": lambda x: _zoom_out(x, 0.8),
}


def _zoom_out(x: np.ndarray, f: float) -> np.ndarray:
    """The image shrunk by ``f`` about its centre on a black canvas (a wider field of view)."""
    h, w = x.shape
    small = ndimage.zoom(x, f, order=1)
    out = np.zeros_like(x)
    y0, x0 = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    out[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    return out


def evaluate_real(engine: OrtEngine, folder: Path, batch: int) -> dict[str, Any]:
    """AUROC and ECE on the real test half, as acquired and under acquisition shifts."""
    imgs, y, m = folder_split(folder, "test", engine.manifest.image_size)
    out: dict[str, Any] = {}
    for name, shift in SHIFTS.items():
        out[name] = _real_scores(engine, [shift(i) for i in imgs], y, m, batch)
    return out


def _real_scores(
    engine: OrtEngine, imgs: list[np.ndarray], y: np.ndarray, m: np.ndarray, batch: int
) -> dict[str, Any]:
    probs = np.concatenate([
        engine.encode(engine.preprocess(imgs[k : k + batch])).entity_probs
        for k in range(0, len(imgs), batch)
    ])  # fmt: skip
    cols = [list(engine.manifest.labels).index(c) for c in FOLDER_LABELS]
    p, t, mk = probs[:, cols], y[:, cols].astype(int), m[:, cols]
    ece = {c: expected_calibration_error(p[mk[:, i] > 0, i], t[mk[:, i] > 0, i])
           for i, c in enumerate(FOLDER_LABELS)}  # fmt: skip
    auroc = auroc_per_label(p, t, FOLDER_LABELS, mk)
    return {"n": len(imgs), "auroc": auroc, "ece": ece, "other_calls": other_calls(engine, probs)}


def other_calls(engine: OrtEngine, probs: np.ndarray) -> dict[str, Any]:
    """Label-free false positives on paediatric pneumonia / normal films: how many images of
    (N, C) calibrated ``probs`` the entity decision gives a finding the folder labels do not
    cover (effusion, devices, fracture, ...: rare on these films), in all and per label."""
    calls = [set(engine.entities(row)) - set(FOLDER_LABELS) for row in probs]
    per = Counter(name for c in calls for name in c)
    return {"images": sum(bool(c) for c in calls), "of": len(calls), "per_label": dict(per)}


def main(argv: Sequence[str] | None = None) -> int:
    o = parse_args(argv)
    engine = OrtEngine.from_weights(o.weights)
    res: dict[str, Any] = {"weights": engine.model_facts, "beams": o.beams}
    res["truth_entities"], res["phantom_start"] = o.truth_entities, o.phantom_start
    res["phantom_size"] = o.phantom_size or engine.manifest.read_size
    res["phantoms"] = evaluate_phantoms(
        engine, o.phantom_test, o.beams, o.batch_size, o.truth_entities, o.phantom_start,
        o.phantom_size,
    )  # fmt: skip
    if o.folder:
        res["real_test_half"] = evaluate_real(engine, Path(o.folder), o.batch_size)
    out = Path(o.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str) + "\n", encoding="utf-8")
    summary = {
        k: v for k, v in res["phantoms"].items() if k in ("dropped_by_engine", "left_in_reports")
    }
    ce = res["phantoms"]["clinical_vs_truth"]
    print(json.dumps(summary), {k: round(ce[k], 3) for k in ce if k.startswith("CE-14_F1")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
