"""``/docs`` (Swagger UI) and ``/redoc`` served with local assets: no CDN request at all.

FastAPI's own pages load their JavaScript, CSS and favicon from public CDNs, which hospital
networks block (the page stays blank). The assets come from the ``fastapi-offline`` package
(serve extra; Swagger UI 5 and ReDoc, MIT), mounted under :data:`STATIC_PATH`; the Swagger UI
online validator is switched off (it would call validator.swagger.io from the browser).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_PATH = "/static/docs"  # where the assets are mounted
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png")
OAUTH2_REDIRECT = "/docs/oauth2-redirect"


def assets_dir() -> Path:
    """The folder holding :data:`ASSETS` (inside the installed ``fastapi_offline`` package)."""
    return Path(str(files("fastapi_offline") / "static"))


def install_docs(app: FastAPI) -> None:
    """Mount the assets and add ``/docs``, its OAuth2 redirect page and ``/redoc`` to ``app``
    (built with ``docs_url=None, redoc_url=None``)."""
    app.mount(STATIC_PATH, StaticFiles(directory=assets_dir()), name="docs-static")

    def _static(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{STATIC_PATH}/{name}"

    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=f"{request.scope.get('root_path', '')}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=OAUTH2_REDIRECT,
            swagger_js_url=_static(request, "swagger-ui-bundle.js"),
            swagger_css_url=_static(request, "swagger-ui.css"),
            swagger_favicon_url=_static(request, "favicon.png"),
            swagger_ui_parameters={"validatorUrl": None},
        )

    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=f"{request.scope.get('root_path', '')}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=_static(request, "redoc.standalone.js"),
            redoc_favicon_url=_static(request, "favicon.png"),
            with_google_fonts=False,
        )

    for path, endpoint in (("/docs", swagger_ui), (OAUTH2_REDIRECT, oauth2_redirect),
                           ("/redoc", redoc)):  # fmt: skip
        app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False)
