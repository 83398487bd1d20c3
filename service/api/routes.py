"""``POST /report``, ``POST /ground`` and ``GET /model`` (mounted under ``/v1`` and unversioned).

Routes are ``async`` only to await the body and the batcher: decoding, the engine and PNG
encoding all run in worker threads.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from model_export.ssacl import anatomy
from service.imaging.types import DecodedImage, DicomStudyRef, Imaging
from service.inference.batching import Generated
from service.inference.types import Engine, GenerateOptions, Grounding
from service.metrics import REQUEST_STAGES
from service.settings import MAX_BEAM_SIZE

from . import responses
from .auth import require_api_key
from .deps import BatcherDep, EngineDep, ImagingDep, StateDep, admitted
from .dicom_sr import SR_MEDIA_TYPE, report_sr, sr_source, wants_sr
from .errors import PROBLEM_MEDIA_TYPE, VALIDATION, ApiError
from .fhir import FHIR_MEDIA_TYPE, report_bundle
from .inputs import (
    MULTIPART,
    RAW_TYPES,
    Upload,
    collect_phrases,
    decode_limits,
    heatmap_cap,
    heatmap_shape,
    read_upload,
)
from .rescale import groundings_in_original, report_in_original
from .schemas import GroundResponse, ModelResponse, ProblemOut, ReportResponse
from .state import AppState, request_id_of

_PROBLEM = {"model": ProblemOut, "content": {PROBLEM_MEDIA_TYPE: {}}}
PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {**_PROBLEM, "description": desc}
    for code, desc in {
        400: "Malformed multipart body",
        401: "Missing or invalid API key",
        408: "Body not received within CXR_BODY_TIMEOUT_S",
        413: "Body or image too large",
        415: "Unsupported media type",
        422: "Invalid parameters, or an image that cannot be decoded or used",
        503: "Overloaded or not ready (see Retry-After)",
        504: "Timed out",
    }.items()
}


_SR_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": f"JSON report; with Accept: {SR_MEDIA_TYPE} (DICOM input only) a DICOM "
        "Structured Report (TID 1500) in the source's study",
        "content": {SR_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    },
    406: {**_PROBLEM, "description": "DICOM SR asked for an input that is not a DICOM image"},
}


def _image_body(extra_fields: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI requestBody: multipart ``file`` (+ fields) or a raw typed image."""
    binary = {"type": "string", "format": "binary"}
    form = {"type": "object", "required": ["file"], "properties": {"file": binary, **extra_fields}}
    content = {MULTIPART: {"schema": form}, **{t: {"schema": binary} for t in RAW_TYPES}}
    return {"requestBody": {"required": True, "content": content}}


async def _decode(imaging: Imaging, state: AppState, upload: Upload) -> tuple[DecodedImage, float]:
    """Decode an upload in a worker thread; (image, seconds)."""
    t0 = time.perf_counter()
    img = await run_in_threadpool(
        imaging.decode, upload.data, upload.content_type, decode_limits(state.settings)
    )
    return img, time.perf_counter() - t0


VARY = {"Vary": "Accept"}  # the report route answers JSON, a FHIR Bundle or a DICOM SR by Accept


def _observe(state: AppState, endpoint: str, timings_s: dict[str, float]) -> None:
    """Per-request stages of one ``report`` or ``ground`` request (the batcher observes the
    batch stages once per engine batch)."""
    for stage, seconds in timings_s.items():
        if stage in REQUEST_STAGES:
            state.metrics.stage_latency.labels(endpoint=endpoint, stage=stage).observe(seconds)


async def report(
    request: Request,
    state: StateDep,
    engine: EngineDep,
    batcher: BatcherDep,
    imaging: ImagingDep,
    beam_size: Annotated[int | None, Query(ge=1, le=MAX_BEAM_SIZE)] = None,
    max_new_tokens: Annotated[int | None, Query(ge=1, le=1000)] = None,
    heatmaps: bool | None = None,
    heatmap_size: Annotated[
        int | None, Query(ge=8, le=8192, description="max side, px; at most CXR_HEATMAP_MAX_SIDE")
    ] = None,
    colormap: bool | None = None,
    min_new_tokens: Annotated[int | None, Query(ge=0, le=200, description="default: model")] = None,
    repetition_penalty: Annotated[float | None, Query(ge=1.0, le=5.0)] = None,
    length_penalty: Annotated[float | None, Query(ge=0.0, le=5.0)] = None,
) -> ReportResponse | Response:
    """Report text, entities, anatomy candidates and per-sentence grounding (boxes, heatmaps)."""
    s = state.settings
    if max_new_tokens is not None and max_new_tokens > s.max_new_tokens_limit:
        raise ApiError(VALIDATION, f"max_new_tokens: at most {s.max_new_tokens_limit}")
    t0 = time.perf_counter()
    upload = await read_upload(request, max_fields=4, timeout_s=s.body_timeout_s)
    async with admitted(state):  # after the body: a slow upload never holds engine capacity
        img, decode_s = await _decode(imaging, state, upload)
        sr_study = sr_source(img) if wants_sr(request.headers.get("accept")) else None  # or 406
        options = GenerateOptions(
            beam_size=beam_size or s.default_beam_size,
            max_new_tokens=max_new_tokens or s.default_max_new_tokens,
            heatmaps=s.heatmaps_default if heatmaps is None else heatmaps,
            heatmap_size=heatmap_shape(img.height, img.width, heatmap_cap(heatmap_size, s)),
            min_new_tokens=min_new_tokens,
            repetition_penalty=repetition_penalty,
            length_penalty=length_penalty,
        )
        done = await batcher.generate(img.pixels, options, s.request_timeout_s)
        out = await _report_out(request, state, engine, imaging, done, img, decode_s, colormap)
    out.timings_ms["total"] = round((time.perf_counter() - t0) * 1000.0, 2)  # incl. PNGs
    return await _negotiated(out, request, sr_study)


async def _report_out(
    request: Request,
    state: AppState,
    engine: Engine,
    imaging: Imaging,
    done: Generated,
    img: DecodedImage,
    decode_s: float,
    colormap: bool | None,
) -> ReportResponse:
    """Count one finished report and build its JSON response (PNGs in a worker thread)."""
    s = state.settings
    rep = report_in_original(done.report, img)  # boxes: working -> original pixels
    request.state.batch_size = done.batch_size
    request.state.queue_ms = round(done.queue_s * 1000.0, 2)
    timings = {"decode": decode_s, "queue": done.queue_s, **rep.timings}
    _observe(state, "report", timings)
    state.metrics.tokens.inc(rep.num_tokens)
    state.metrics.reports.inc()
    out = await run_in_threadpool(
        partial(
            responses.report_response,
            rep,
            img,
            request_id=request_id_of(request.scope),
            model=responses.model_ref(engine.model_facts),
            timings_ms=responses.ms(timings),
            batch_size=done.batch_size,
            colormap=s.heatmap_colormap_default if colormap is None else colormap,
            png=imaging.heatmap_png,
        )
    )
    return out


async def _negotiated(
    out: ReportResponse, request: Request, sr_study: DicomStudyRef | None
) -> ReportResponse | Response:
    """The response in the format the request's Accept chose: DICOM SR, FHIR or JSON."""
    if sr_study is not None:  # DICOM SR (TID 1500) in the source's study
        sr = await run_in_threadpool(report_sr, out, sr_study)
        return Response(sr, media_type=SR_MEDIA_TYPE, headers=VARY)
    if FHIR_MEDIA_TYPE in request.headers.get("accept", ""):  # content negotiation
        return JSONResponse(report_bundle(out), media_type=FHIR_MEDIA_TYPE, headers=VARY)
    return out


def _timed_ground(
    engine: Engine, image: np.ndarray, phrases: list[str], heatmap_hw: tuple[int, int] | None
) -> tuple[list[Grounding], float]:
    """engine.ground plus its wall time (runs in an engine slot)."""
    t0 = time.perf_counter()
    out = engine.ground(image, phrases, heatmap_hw)
    if len(out) != len(phrases):
        raise RuntimeError(f"engine returned {len(out)} groundings for {len(phrases)} phrases")
    return out, time.perf_counter() - t0


async def ground(
    request: Request,
    state: StateDep,
    engine: EngineDep,
    batcher: BatcherDep,
    imaging: ImagingDep,
    phrase: Annotated[list[str] | None, Query(description="repeatable")] = None,
    heatmaps: bool = True,
    heatmap_size: Annotated[
        int | None, Query(ge=8, le=8192, description="max side, px; at most CXR_HEATMAP_MAX_SIDE")
    ] = None,
    colormap: bool | None = None,
) -> GroundResponse:
    """Per phrase: best anatomy node, similarity score, box and heatmap."""
    s = state.settings
    t0 = time.perf_counter()
    upload = await read_upload(request, s.max_phrases + 4, s.body_timeout_s)
    phrases = collect_phrases(phrase or [], upload, s)
    async with admitted(state):  # after the body: a slow upload never holds engine capacity
        img, decode_s = await _decode(imaging, state, upload)
        heat_hw = heatmap_shape(img.height, img.width, heatmap_cap(heatmap_size, s))
        (groundings, ground_s), queue_s = await batcher.call(
            partial(_timed_ground, engine, img.pixels, phrases, heat_hw), s.request_timeout_s
        )
        request.state.queue_ms = round(queue_s * 1000.0, 2)
        timings = {"decode": decode_s, "queue": queue_s, "ground": ground_s}
        _observe(state, "ground", timings)
        res = await run_in_threadpool(
            partial(
                responses.ground_response,
                groundings_in_original(groundings, img),  # boxes in original pixels
                img,
                request_id=request_id_of(request.scope),
                model=responses.model_ref(engine.model_facts),
                timings_ms=responses.ms(timings),
                heatmaps=heatmaps,
                colormap=s.heatmap_colormap_default if colormap is None else colormap,
                png=imaging.heatmap_png,
            )
        )
    res.timings_ms["total"] = round((time.perf_counter() - t0) * 1000.0, 2)  # incl. PNGs
    return res


def model(state: StateDep, engine: EngineDep) -> ModelResponse:
    """Manifest facts, execution provider, anatomy graph, labels, input size and API limits."""
    facts = dict(engine.model_facts)
    s = state.settings
    size = facts.get("input_size")
    labels = facts.get("labels", anatomy.CHEXPERT_LABELS)
    return ModelResponse(
        model=responses.model_ref(facts),
        provider=engine.provider,
        input_size=size if isinstance(size, (int, list)) else None,
        labels=[str(x) for x in labels] if isinstance(labels, (list, tuple)) else [],
        facts=facts,
        anatomy=engine.anatomy_graph,
        limits={
            "max_body_bytes": s.max_body_bytes,
            "max_pixels": s.max_pixels,
            "working_max_side": s.working_max_side,
            "min_side": s.min_side,
            "max_beam_size": MAX_BEAM_SIZE,
            "max_new_tokens": s.max_new_tokens_limit,
            "max_phrases": s.max_phrases,
            "max_phrase_chars": s.max_phrase_chars,
            "max_batch": s.max_batch,
            "request_timeout_s": s.request_timeout_s,
        },
    )


def build_router(prefix: str = "", deprecated: bool = False) -> APIRouter:
    """The model routes under ``prefix`` (route templates include it, e.g. ``/v1/report``)."""
    router = APIRouter(prefix=prefix, dependencies=[Depends(require_api_key)])
    router.add_api_route(
        "/report",
        report,
        methods=["POST"],
        response_model=ReportResponse,
        responses={**PROBLEMS, **_SR_RESPONSES},
        openapi_extra=_image_body({}),
        summary="Generate a grounded report for one chest X-ray",
        deprecated=deprecated,
    )
    router.add_api_route(
        "/ground",
        ground,
        methods=["POST"],
        response_model=GroundResponse,
        responses=PROBLEMS,
        openapi_extra=_image_body({"phrase": {"type": "array", "items": {"type": "string"}}}),
        summary="Ground free-text phrases on one chest X-ray",
        deprecated=deprecated,
    )
    router.add_api_route(
        "/model",
        model,
        methods=["GET"],
        response_model=ModelResponse,
        responses=PROBLEMS,
        summary="Model facts",
        deprecated=deprecated,
    )
    return router
