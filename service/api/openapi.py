"""The OpenAPI document with the limits this app enforces, taken from its settings.

Route signatures fix only the absolute bounds (``max_new_tokens`` <= 1000, the largest
``CXR_MAX_NEW_TOKENS_LIMIT``); the configured limits are checked in the routes
(:func:`service.api.inputs.collect_phrases`, the decoder's :class:`DecodeLimits`). This module
writes those same values into the schema: ``max_new_tokens`` maximum, the phrase count and
length (query and form), and the image limits of the request body (``x-image-limits`` and the
body's description), so a client generated from ``/openapi.json`` refuses what the service does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI

from service.settings import MAX_BEAM_SIZE, Settings

IMAGE_ROUTES = ("/report", "/ground")  # path endings whose body is an image


def image_limits(s: Settings) -> dict[str, int]:
    """The decoder's bounds on an upload (see :func:`service.api.inputs.decode_limits`)."""
    return {"max_body_bytes": s.max_body_bytes, "max_pixels": s.max_pixels, "min_side": s.min_side}


def _branches(schema: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The schema itself and each ``anyOf`` branch (FastAPI writes ``int | None`` that way)."""
    yield schema
    yield from schema.get("anyOf", [])


def _limit_phrases(schema: dict[str, Any], s: Settings) -> None:
    for branch in _branches(schema):
        if branch.get("type") == "array":
            branch["maxItems"] = s.max_phrases
            branch["items"] = {
                "type": "string", "minLength": 1, "maxLength": s.max_phrase_chars,
                "pattern": r"\S",  # not only blanks (phrases are stripped, then checked)
            }  # fmt: skip


def _limit_param(param: dict[str, Any], s: Settings) -> None:
    maxima = {"max_new_tokens": s.max_new_tokens_limit, "beam_size": MAX_BEAM_SIZE}
    name, schema = param.get("name"), param.get("schema", {})
    if name == "phrase":
        _limit_phrases(schema, s)
    elif name in maxima:
        for branch in _branches(schema):
            if branch.get("type") == "integer":
                branch["maximum"] = maxima[name]


def _limit_body(body: dict[str, Any], s: Settings) -> None:
    lim = image_limits(s)
    body["x-image-limits"] = lim
    body["description"] = (
        f"One DICOM, PNG or JPEG image: at most {lim['max_body_bytes']} bytes, width x height "
        f"at most {lim['max_pixels']} pixels, each side at least {lim['min_side']} pixels"
    )
    form = body.get("content", {}).get("multipart/form-data", {}).get("schema", {})
    if "phrase" in form.get("properties", {}):
        _limit_phrases(form["properties"]["phrase"], s)


def apply_limits(spec: dict[str, Any], s: Settings) -> dict[str, Any]:
    """Write the settings' limits into ``spec`` (in place; also returned)."""
    for path, ops in spec.get("paths", {}).items():
        for op in ops.values():
            for param in op.get("parameters", []):
                _limit_param(param, s)
            if path.endswith(IMAGE_ROUTES) and "requestBody" in op:
                _limit_body(op["requestBody"], s)
    return spec


def install_openapi_limits(app: FastAPI, settings: Settings) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) carry ``settings``' limits."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = apply_limits(generate(), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
