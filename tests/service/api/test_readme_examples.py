"""Every ``curl`` of the README, as written, against a real uvicorn on the shipped weights.

The server is what ``make serve`` starts (default settings: auth off, ``auto`` provider) on a
free port of 127.0.0.1; each command runs with the real ``curl`` binary through bash, only the
address substituted, in a scratch folder that links ``examples/``. A ``.curlrc`` (CURL_HOME)
dumps each response's headers to a file, so the status and content type are checked without
changing the command. ``examples/save_overlay.py`` runs against the same server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.app import create_app
from service.settings import Settings

from .uvicorn_thread import HOST, serve

REPO = Path(__file__).resolve().parents[3]
WEIGHTS = REPO / "weights"
README_URL = "http://127.0.0.1:8000"
BY_PATH = {"/metrics": "text/plain", "/viewer": "text/html"}  # else JSON, or the Accept type


def readme_curls() -> list[str]:
    """The curl commands of the README's bash blocks (continuation lines joined)."""
    text = (REPO / "README.md").read_text()
    commands: list[str] = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL):
        for cmd in re.sub(r"\\\n\s*", " ", block).splitlines():
            if cmd.startswith("curl ") and README_URL in cmd:
                commands.append(cmd.strip())
    return commands


def expected_type(cmd: str) -> str:
    accept = re.search(r"Accept: ([\w.+/-]+)", cmd)
    if accept:
        return accept.group(1)
    path = re.search(rf"{re.escape(README_URL)}(/[\w/]*)", cmd)
    return BY_PATH.get(path.group(1) if path else "", "application/json")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    if not (WEIGHTS / "manifest.json").is_file():
        pytest.skip(f"no shipped weights at {WEIGHTS}")
    settings = Settings(_env_file=None, weights_dir=WEIGHTS, log_level="WARNING")  # type: ignore[call-arg]
    with serve(create_app(settings), name="uvicorn-readme") as port:
        yield f"http://{HOST}:{port}"


def run_curl(
    cmd: str, url: str, scratch: Path, n: int
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run ``cmd`` (address replaced) in ``scratch``; the result and the dumped headers."""
    home = scratch / f"curlhome-{n}"
    home.mkdir()
    headers = home / "headers.txt"
    (home / ".curlrc").write_text(f'dump-header = "{headers}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env["CURL_HOME"] = str(home)
    r = subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd.replace(README_URL, url)], cwd=scratch, env=env,
        capture_output=True, text=True, errors="replace", timeout=120, check=False,
    )  # fmt: skip
    return r, headers.read_text(errors="replace") if headers.is_file() else ""


def status_and_type(headers: str) -> tuple[int, str]:
    """Status and content type of the last response in a header dump."""
    last = re.split(r"(?m)^(?=HTTP/)", headers)[-1]
    status = int(last.split()[1])
    ctype = re.search(r"(?im)^content-type:\s*([^;\r\n]+)", last)
    return status, ctype.group(1).strip() if ctype else ""


def test_every_readme_curl_runs_as_written(base_url: str, tmp_path: Path) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    (tmp_path / "examples").symlink_to(REPO / "examples")
    commands = readme_curls()
    assert len(commands) >= 7, commands  # report x2, ground, model, healthz, readyz, metrics
    for n, cmd in enumerate(commands):
        r, headers = run_curl(cmd, base_url, tmp_path, n)
        assert r.returncode == 0, (cmd, r.stderr)
        assert status_and_type(headers) == (200, expected_type(cmd)), (cmd, headers)
        if expected_type(cmd) == "application/json" and " -i " not in cmd:
            body = json.loads(r.stdout)
            if "/v1/model" in cmd:  # the provider the sessions actually run on
                assert body["provider"] in ("CPUExecutionProvider", "CUDAExecutionProvider")
            if "/v1/report" in cmd:
                assert body["sentences"] and body["disclaimer"]
        if expected_type(cmd) == "application/fhir+json":
            bundle = json.loads(r.stdout)
            assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"


def test_save_overlay_example(base_url: str, tmp_path: Path) -> None:
    out = tmp_path / "overlay.png"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    r = subprocess.run(
        [sys.executable, "examples/save_overlay.py", "--url", base_url, "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "->" in r.stdout and "not for clinical use" in r.stderr
    with Image.open(out) as im, Image.open(REPO / "examples" / "chest_phantom.png") as src:
        assert (im.format, im.mode, im.size) == ("PNG", "RGB", src.size)
        rgb, grey = np.asarray(im, np.int16), np.asarray(src, np.int16)
    coloured = np.abs(rgb[..., 0] - rgb[..., 2]) > 40  # jet pixels, not grey
    assert 0.001 < coloured.mean() < 0.9
    assert np.abs(rgb[~coloured].mean(axis=-1) - grey[~coloured]).mean() < 10  # image kept
