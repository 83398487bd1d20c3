"""Engine results (dataclasses) -> API schemas. Pure functions; PNG encoding is the costly part,
so routes call :func:`report_response` / :func:`ground_response` in a worker thread, and the
heatmaps of one response are encoded on a few threads at once (zlib releases the GIL)."""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from model_export.ssacl import anatomy
from service.imaging.types import DecodedImage, HeatmapPngFn
from service.inference.types import Box, Grounding, Report

from .schemas import (
    AnatomyNodeOut,
    BoxOut,
    DicomOut,
    EntityOut,
    GroundingOut,
    GroundResponse,
    HeatmapOut,
    ImageOut,
    ModelRef,
    ReportResponse,
    SentenceOut,
)


def _unit(x: float, lo: float = 0.0, hi: float = 1.0) -> float:
    """Clamp to [lo, hi]; non-finite -> lo."""
    x = float(x)
    return lo if not math.isfinite(x) else min(hi, max(lo, x))


def node_out(node_id: int) -> AnatomyNodeOut:
    """Id, name and chest-to-node path of an anatomy node."""
    i = anatomy.node_id(int(node_id))
    return AnatomyNodeOut(id=i, name=anatomy.NODE_NAMES[i], path=list(anatomy.path(i)))


def box_out(box: Box) -> BoxOut:
    x0, y0, x1, y1 = (max(0, int(v)) for v in box)
    return BoxOut(x0=x0, y0=y0, x1=x1, y1=y1)


def heatmap_out(heatmap: np.ndarray, colormap: bool, png: HeatmapPngFn) -> HeatmapOut:
    """Base64 PNG of an (H, W) map in [0, 1]."""
    data = base64.b64encode(png(heatmap, colormap)).decode("ascii")
    return HeatmapOut(width=int(heatmap.shape[1]), height=int(heatmap.shape[0]), data=data)


#: threads that encode one response's heatmaps: a report on a 1,841 x 1,955 radiograph has
#: about seven full-size maps at 50-120 ms of PNG each (``docs/PERFORMANCE.md``)
PNG_THREADS = max(1, min(4, os.cpu_count() or 1))
_PNG_POOL = ThreadPoolExecutor(PNG_THREADS, thread_name_prefix="cxr-png")  # threads start on use


def heatmaps_out(
    maps: Sequence[np.ndarray | None], colormap: bool, png: HeatmapPngFn
) -> list[HeatmapOut | None]:
    """:func:`heatmap_out` of each map (None stays None), on up to :data:`PNG_THREADS` threads;
    a map given twice (the same array) is encoded once. Same bytes as one after another."""
    todo = {id(m): m for m in maps if m is not None}
    if len(todo) < 2 or PNG_THREADS < 2:
        done = {k: heatmap_out(m, colormap, png) for k, m in todo.items()}
    else:
        outs = _PNG_POOL.map(lambda m: heatmap_out(m, colormap, png), todo.values())
        done = dict(zip(todo, outs, strict=True))
    return [None if m is None else done[id(m)] for m in maps]


def image_out(img: DecodedImage) -> ImageOut:
    """Format, size, non-identifying DICOM facts and warnings of the decoded input."""
    d = img.dicom
    dicom = None
    if d is not None:
        dicom = DicomOut(
            modality=d.modality,
            body_part=d.body_part,
            view_position=d.view_position,
            photometric_interpretation=d.photometric_interpretation,
            bits_stored=d.bits_stored,
            transfer_syntax=d.transfer_syntax,
        )
    return ImageOut(
        source=img.source,
        width=img.width,
        height=img.height,
        dicom=dicom,
        warnings=list(img.warnings),
    )


def model_ref(facts: Mapping[str, object]) -> ModelRef:
    """Name, version and weights hash from the engine's ``model_facts``."""
    sha = facts.get("sha256", facts.get("weights_sha256", "unknown"))
    return ModelRef(
        name=str(facts.get("name", "unknown")),
        version=str(facts.get("version", "unknown")),
        weights_sha256=str(sha),
    )


def entities_out(report: Report) -> list[EntityOut]:
    """Every label with its probability, highest first; ``predicted`` marks the prompt."""
    chosen = set(report.entities)
    names = list(report.entity_probs) + [e for e in report.entities if e not in report.entity_probs]
    out = [
        EntityOut(name=n, probability=_unit(report.entity_probs.get(n, 0.0)), predicted=n in chosen)
        for n in names
    ]
    return sorted(out, key=lambda e: (-e.probability, e.name))


def ms(timings_s: Mapping[str, float]) -> dict[str, float]:
    """Stage seconds -> milliseconds, rounded to 0.01 ms."""
    return {k: round(float(v) * 1000.0, 2) for k, v in timings_s.items()}


def report_response(
    report: Report,
    img: DecodedImage,
    *,
    request_id: str,
    model: ModelRef,
    timings_ms: dict[str, float],
    batch_size: int,
    colormap: bool,
    png: HeatmapPngFn,
) -> ReportResponse:
    """The JSON body of ``POST /v1/report``."""
    heatmaps = heatmaps_out([s.heatmap for s in report.sentences], colormap, png)
    sentences = [
        SentenceOut(
            text=s.text,
            anatomy=[node_out(i) for i in s.node_ids],
            confidence=_unit(s.confidence),
            box=box_out(s.box),
            heatmap=heatmap,
        )
        for s, heatmap in zip(report.sentences, heatmaps, strict=True)
    ]
    return ReportResponse(
        request_id=request_id,
        report=report.text,
        findings=report.findings,
        impression=report.impression,
        entities=entities_out(report),
        anatomy_candidates=list(report.candidates),
        sentences=sentences,
        num_tokens=report.num_tokens,
        image=image_out(img),
        model=model,
        timings_ms=timings_ms,
        batch_size=batch_size,
        grounding_method=report.grounding_method,
    )


def ground_response(
    groundings: list[Grounding],
    img: DecodedImage,
    *,
    request_id: str,
    model: ModelRef,
    timings_ms: dict[str, float],
    heatmaps: bool,
    colormap: bool,
    png: HeatmapPngFn,
) -> GroundResponse:
    """The JSON body of ``POST /v1/ground``."""
    maps = heatmaps_out([g.heatmap if heatmaps else None for g in groundings], colormap, png)
    items = [
        GroundingOut(
            phrase=g.phrase,
            anatomy=node_out(g.node_id),
            score=_unit(g.score, -1.0, 1.0),
            confidence=_unit(g.confidence),
            method=g.method,
            box=box_out(g.box),
            heatmap=heatmap,
        )
        for g, heatmap in zip(groundings, maps, strict=True)
    ]
    return GroundResponse(
        request_id=request_id,
        groundings=items,
        image=image_out(img),
        model=model,
        timings_ms=timings_ms,
    )
