"""Synthetic chest radiographs with exact anatomy masks, CheXpert findings and a report.

``generate_phantom(seed, size)`` is deterministic in (seed, size, config). The image is a
frontal radiograph-like grey image (white = dense); ``masks`` holds one exact boolean mask per
anatomy node of ``model_export.ssacl.anatomy`` (children inside parents; the chest is the union
of lungs, mediastinum, skeletal structures and abdomen); each finding carries an exact mask
inside the nodes it names; the report is written from the findings with per-sentence anatomy
and labels. Only numpy and scipy are used, so data loaders can call it in worker processes.

Modules: ``geometry`` (anatomy shapes), ``masks`` (node masks), ``render`` (density -> image),
``plan`` (finding prior), ``findings`` / ``lesions`` /
``devices`` (drawing the 13 findings), ``report`` + ``phrases`` (text),
``types`` (the records re-exported here), ``grid`` (contact sheet CLI).
"""

from __future__ import annotations

import numpy as np

from model_export.data.phantom.findings import (
    Canvas,
    anatomy_changes,
    plan_findings,
    realize_findings,
)
from model_export.data.phantom.geometry import make_frame, sample_geometry
from model_export.data.phantom.masks import anatomy_masks
from model_export.data.phantom.render import anatomy_density, expose, sample_exposure
from model_export.data.phantom.report import write_report
from model_export.data.phantom.types import (
    PhantomConfig,
    PhantomFinding,
    PhantomSample,
    ReportSentence,
)
from model_export.ssacl.anatomy import CHEXPERT_LABELS

__all__ = [
    "DEFAULT_CONFIG",
    "MIN_SIZE",
    "PhantomConfig",
    "PhantomFinding",
    "PhantomSample",
    "ReportSentence",
    "generate_phantom",
    "label_vector",
]

DEFAULT_CONFIG = PhantomConfig()
MIN_SIZE = 32  # smaller images lose whole anatomy nodes
MARKINGS = 0.3  # weight of the lung-marking layer in the density


def label_vector(findings: tuple[PhantomFinding, ...] | list[PhantomFinding]) -> np.ndarray:
    """(14,) float32 0/1 in CHEXPERT_LABELS order; No Finding = 1 iff nothing but devices."""
    present = {f.label for f in findings}
    out = np.array([label in present for label in CHEXPERT_LABELS], dtype=np.float32)
    out[0] = float(not present - {"Support Devices"})
    return out


def generate_phantom(
    seed: int, size: int = 224, config: PhantomConfig = DEFAULT_CONFIG
) -> PhantomSample:
    """One phantom radiograph of ``size`` x ``size`` pixels, deterministic in its arguments.

    Findings, anatomy and report wording depend on ``seed`` only (not on ``size``), except that
    a finding whose mask is empty at a tiny size is dropped.
    """
    if size < MIN_SIZE:
        raise ValueError(f"phantom size must be >= {MIN_SIZE} pixels, got {size}")
    rng = np.random.default_rng(seed)
    plans = plan_findings(rng, config)
    geom = sample_geometry(rng, config.rotation_deg, config.scale, anatomy_changes(plans, rng))
    exposure = sample_exposure(rng, config.noise, config.blur)
    frame = make_frame(geom, size)
    masks = anatomy_masks(geom, frame)
    base, markings = anatomy_density(geom, frame, masks, rng)
    canvas = Canvas(np.zeros_like(base), np.ones_like(base))
    findings = tuple(realize_findings(plans, geom, frame, masks, rng, canvas))
    image = expose(base + canvas.density + MARKINGS * markings * canvas.keep, exposure, rng)
    report_rng = np.random.default_rng([seed, 1])  # wording independent of the image size
    sentences, findings_text, impression_text = write_report(findings, report_rng, config.p_reorder)
    return PhantomSample(
        image=image,
        masks=masks,
        findings=findings,
        labels=label_vector(findings),
        sentences=sentences,
        findings_text=findings_text,
        impression_text=impression_text,
        report=f"{findings_text} {impression_text}",
        seed=seed,
    )
