"""Files -> records, the way ``POST /v1/report`` answers: read, decode, generate, respond.

Everything here runs inside one worker (a Ray actor) on the engine it holds; nothing imports
Ray. A file that cannot be read or decoded, and an image the engine fails on, become an error
record with a problem (``type``, ``title``, ``status``, ``detail``): never an exception.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from service.api.fhir import report_bundle
from service.api.inputs import heatmap_shape
from service.api.rescale import report_in_original
from service.api.responses import model_ref, ms, report_response
from service.batch.inputs import InputFile, sha256_hex
from service.batch.records import (
    BY_IMAGE_KIND,
    ENGINE_FAILED,
    UNREADABLE,
    Json,
    dumps,
    error_record,
    ok_record,
    problem,
)
from service.imaging.decode import decode_image
from service.imaging.errors import ImageError
from service.imaging.types import DecodedImage, DecodeLimits
from service.inference.heatmaps import heatmap_png
from service.inference.types import Engine, GenerateOptions, Report

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportConfig:
    """How each worker builds its engine and its reports (picklable, sent to the actors)."""

    weights_dir: str  # absolute path, the same on every node
    provider: str = "auto"  # ORT provider: auto | cpu | cuda
    threads: int | None = None  # ORT intra-op threads per engine; None = ORT's default
    decoder_threads: int | None = None  # of the decoder graphs; None = by decoder size
    limits: DecodeLimits = DecodeLimits()
    beam_size: int = 3
    max_new_tokens: int = 100
    heatmaps: bool = False  # base64 PNG heatmaps in every sentence (large records)
    heatmap_max_side: int = 2048  # longest heatmap side, px
    colormap: bool = False  # RGBA jet heatmaps instead of grey
    fhir: bool = False  # also build the FHIR R4 Bundle of each report


@dataclass(frozen=True)
class Outcome:
    """One input's result: its record as a JSON line, and its FHIR Bundle JSON ("" = none)."""

    key: str
    status: str  # "ok" | "error"
    record: str
    fhir: str = ""


@dataclass(frozen=True)
class _Decoded:
    item: InputFile
    sha256: str
    image: DecodedImage
    decode_s: float


def request_id(key: str, sha256: str) -> str:
    """Stable id of one input's report (also seeds the FHIR resource ids)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cxr-batch:{key}:{sha256}"))


def _error(item: InputFile, sha256: str | None, problem_json: Json) -> Outcome:
    return Outcome(item.key, "error", dumps(error_record(item.key, sha256, problem_json)))


def read_and_decode(item: InputFile, limits: DecodeLimits) -> _Decoded | Outcome:
    """The file's decoded image, or its error outcome."""
    t0 = time.perf_counter()
    try:
        data = Path(item.path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return _error(item, None, problem(UNREADABLE, f"cannot read the file: {reason}"))
    sha = sha256_hex(data)
    try:
        img = decode_image(data, None, limits)  # the bytes decide the format
    except ImageError as exc:
        kind = BY_IMAGE_KIND.get(exc.kind, BY_IMAGE_KIND["invalid_image"])
        return _error(item, sha, problem(kind, exc.detail))
    except Exception as exc:  # a decoder bug must not stop the archive
        log.warning("decoder failed on %s: %s", item.key, type(exc).__name__)
        detail = f"the decoder failed: {type(exc).__name__}"
        return _error(item, sha, problem(BY_IMAGE_KIND["undecodable_image"], detail))
    return _Decoded(item, sha, img, time.perf_counter() - t0)


def options_for(img: DecodedImage, cfg: ReportConfig) -> GenerateOptions:
    """The engine options of one image (heatmaps in original pixels up to the cap)."""
    hw = heatmap_shape(img.height, img.width, cfg.heatmap_max_side) if cfg.heatmaps else None
    return GenerateOptions(
        beam_size=cfg.beam_size,
        max_new_tokens=cfg.max_new_tokens,
        heatmaps=cfg.heatmaps,
        heatmap_size=hw,
    )


def report_files(engine: Engine, items: list[InputFile], cfg: ReportConfig) -> list[Outcome]:
    """One outcome per item, in order; images with the same options share an engine call."""
    done: dict[int, Outcome] = {}
    groups: dict[GenerateOptions, list[tuple[int, _Decoded]]] = defaultdict(list)
    for i, item in enumerate(items):
        got = read_and_decode(item, cfg.limits)
        if isinstance(got, Outcome):
            done[i] = got
        else:
            groups[options_for(got.image, cfg)].append((i, got))
    for opts, members in groups.items():
        done.update(_generate(engine, members, opts, cfg))
    return [done[i] for i in range(len(items))]


def _generate(
    engine: Engine, members: list[tuple[int, _Decoded]], opts: GenerateOptions, cfg: ReportConfig
) -> dict[int, Outcome]:
    """One engine call for the group; when it fails, one call per image finds the culprit."""
    t0 = time.perf_counter()
    try:
        reports = engine.generate([d.image.pixels for _, d in members], opts)
    except Exception as exc:
        if len(members) > 1:
            return {k: v for m in members for k, v in _generate(engine, [m], opts, cfg).items()}
        i, d = members[0]
        log.warning("engine failed on %s: %s", d.item.key, type(exc).__name__)
        detail = f"report generation failed: {type(exc).__name__}"
        return {i: _error(d.item, d.sha256, problem(ENGINE_FAILED, detail))}
    engine_s = time.perf_counter() - t0
    return {
        i: _respond(engine, d, rep, len(members), engine_s, cfg)
        for (i, d), rep in zip(members, reports, strict=True)
    }


def _respond(
    engine: Engine, d: _Decoded, rep: Report, batch_size: int, engine_s: float, cfg: ReportConfig
) -> Outcome:
    """The ``POST /v1/report`` body of one image as an ok record (+ its FHIR Bundle)."""
    t0 = time.perf_counter()
    try:
        rep = report_in_original(rep, d.image)  # boxes: working -> original pixels
        out = report_response(
            rep,
            d.image,
            request_id=request_id(d.item.key, d.sha256),
            model=model_ref(engine.model_facts),
            timings_ms=ms({"decode": d.decode_s, **rep.timings}),
            batch_size=batch_size,
            colormap=cfg.colormap,
            png=heatmap_png,
        )
        out.timings_ms["total"] = round((d.decode_s + engine_s + time.perf_counter() - t0) * 1e3, 2)
        fhir = json.dumps(report_bundle(out)) if cfg.fhir else ""
        record = dumps(ok_record(d.item.key, d.sha256, out.model_dump(mode="json")))
    except Exception as exc:
        log.warning("building the report of %s failed: %s", d.item.key, type(exc).__name__)
        detail = f"building the report failed: {type(exc).__name__}"
        return _error(d.item, d.sha256, problem(ENGINE_FAILED, detail))
    return Outcome(d.item.key, "ok", record, fhir)
