"""``GET /viewer`` and its assets: open, strict CSP, no-store, self-contained, packaged."""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path

import tomllib

from service.viewer.routes import ASSETS

STATIC = Path(__file__).resolve().parents[3] / "service" / "viewer" / "static"
PYPROJECT = STATIC.parents[2] / "pyproject.toml"
KEY = "viewer-test-key-0123456789"


def test_page_is_open_with_auth_on_and_the_api_is_not(make_client) -> None:
    with make_client(auth_enabled=True, api_keys=[KEY]) as c:
        page = c.get("/viewer")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert c.get("/v1/model").status_code == 401
        assert c.get("/v1/model", headers={"X-API-Key": KEY}).status_code == 200


def test_page_and_assets_send_a_self_only_csp_and_no_store(client) -> None:
    for path in ("/viewer", *(f"/viewer/static/{name}" for name in ASSETS)):
        r = client.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
        assert directives["connect-src"] == "'self'"
        assert "unsafe" not in csp and "http" not in csp
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-content-type-options"] == "nosniff"
    assert (
        client.get("/viewer/static/viewer.js").headers["content-type"].startswith("text/javascript")
    )
    assert client.get("/viewer/static/viewer.css").headers["content-type"].startswith("text/css")


def test_unknown_assets_are_a_404_problem(client) -> None:
    for name in ("index.html", "..%2Fapp.py", "nope.js"):
        r = client.get(f"/viewer/static/{name}")
        assert r.status_code == 404, name
        assert r.headers["content-type"] == "application/problem+json"


def test_viewer_is_not_in_the_openapi_schema(client) -> None:
    assert not [p for p in client.get("/openapi.json").json()["paths"] if "viewer" in p]


def test_page_has_no_inline_code_and_loads_only_its_assets() -> None:
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline script"
    assert not re.search(r"\sstyle=|<style|\son[a-z]+=", html), "inline style or handler"
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(refs) == sorted(["data:,", *(f"viewer/static/{name}" for name in ASSETS)])
    for name in ("index.html", *ASSETS):
        text = (STATIC / name).read_text()
        assert not re.search(r"https?://|//cdn|@import", text), f"{name} loads from elsewhere"


def test_static_files_are_package_data() -> None:
    data = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]
    globs = data["service.viewer"]
    for f in STATIC.iterdir():
        assert any(fnmatch(f"static/{f.name}", g) for g in globs), f"{f.name} not packaged"
