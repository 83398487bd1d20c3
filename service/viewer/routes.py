"""``GET /viewer`` and its two assets, served from the package's ``static/`` folder.

The page is open (no API key): it holds no results, and the API calls it makes send the key
typed into it. Every response carries a self-only Content-Security-Policy; the access-log
middleware adds ``Cache-Control: no-store`` and ``nosniff`` as on every route.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from service.api.errors import NOT_FOUND, ApiError

#: self only; ``data:`` for the heatmap PNGs of the responses, ``blob:`` for the local preview
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {"Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer"}
#: asset name -> media type (only these are served)
ASSETS = {
    "viewer.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
}

router = APIRouter(tags=["viewer"], include_in_schema=False)


@lru_cache(maxsize=8)
def _read(name: str) -> bytes:
    """Bytes of ``service/viewer/static/<name>`` (read once per process)."""
    return resources.files(__package__).joinpath("static", name).read_bytes()


@router.get("/viewer", response_class=Response)
def viewer_page() -> Response:
    """The viewer's HTML page."""
    return Response(_read("index.html"), media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/viewer/static/{name}", response_class=Response)
def viewer_asset(name: str) -> Response:
    """``viewer.js`` or ``viewer.css``; 404 problem for any other name."""
    media = ASSETS.get(name)
    if media is None:
        raise ApiError(NOT_FOUND, f"no viewer asset {name!r}")
    return Response(_read(name), media_type=media, headers=HEADERS)
