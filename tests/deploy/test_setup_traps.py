"""The set-up traps a new user hits when following the README, each pinned by a test.

``make -n`` prints the recipes without running them (no install, no server); the settings
test copies the compose env file where the README says, into a temporary folder.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

tomllib = pytest.importorskip("tomllib", reason="Python 3.11+ reads pyproject.toml")
REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
EXAMPLES = REPO / "examples"


def make_n(target: str, cwd: Path = REPO, **env: str) -> str:
    """The commands ``make -n target`` would run, with ``env`` added to a CXR_-free environment."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CXR_", "MAKE"))}
    r = subprocess.run(
        [make, "-n", target], cwd=cwd, env={**base, **env},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def extra(name: str) -> set[str]:
    """The project names an extra installs, self-references (``ssacl-cxr[x]``) expanded."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    out: set[str] = set()
    for req in extras[name]:
        m = re.match(r"^([A-Za-z0-9_.-]+)(\[([^\]]+)\])?", req)
        assert m, req
        if m.group(1) == "ssacl-cxr":
            for sub in m.group(3).split(","):
                out |= extra(sub.strip())
        else:
            out.add(m.group(1).lower().replace("_", "-"))
    return out


# ---------------------------------------------------------------- 1. CXR_WEIGHTS_DIR
def test_env_weights_dir_reaches_make_serve() -> None:
    serve = [ln for ln in make_n("serve", CXR_WEIGHTS_DIR="/models/other").splitlines()
             if "-m service" in ln]  # fmt: skip
    assert serve == [
        "CXR_WEIGHTS_DIR=/models/other .venv/bin/python -m service --host 127.0.0.1 --port 8000"
    ]
    assert "CXR_WEIGHTS_DIR=weights " in make_n("serve")  # the default without the variable


# ---------------------------------------------------------------- 2. .env vs compose
def readme_compose_env_file() -> str:
    """Where the README's Deployment section copies ``.env.example``."""
    deployment = README.read_text().split("## Deployment", 1)[1]
    m = re.search(r"^cp \.env\.example (\S+)", deployment, re.MULTILINE)
    assert m, "the README's Deployment section has no `cp .env.example ...`"
    return m.group(1)


def test_compose_env_file_as_the_readme_says_leaves_local_settings_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.settings import Settings

    dest = tmp_path / readme_compose_env_file()
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / ".env.example", dest)
    for name in [n for n in os.environ if n.startswith("CXR_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    s = Settings()  # what `make serve` would read there
    assert (s.provider, s.auth_enabled, s.api_keys) == ("auto", False, [])
    assert s.model_dump() == Settings(_env_file=None).model_dump()  # type: ignore[call-arg]


def test_compose_env_file_is_ignored_and_named_consistently() -> None:
    name = readme_compose_env_file()
    assert name != ".env"
    for doc in ("docker-compose.yml", ".env.example", "docs/OPERATIONS.md"):
        assert f"cp .env.example {name}" in (REPO / doc).read_text() or (
            f"Copy to {name}" in (REPO / doc).read_text()
        ), doc
    git = shutil.which("git")
    if git is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    for path in (name, ".venv-gpu/x"):
        r = subprocess.run([git, "check-ignore", "-q", path], cwd=REPO, check=False)
        assert r.returncode == 0, f"{path} is not git-ignored"


# ---------------------------------------------------------------- 3. serve-gpu
def test_serve_and_serve_gpu_extras_hold_one_onnxruntime_each() -> None:
    serve, gpu = extra("serve"), extra("serve-gpu")
    assert "onnxruntime" in serve and "onnxruntime-gpu" not in serve
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu
    assert serve - {"onnxruntime"} == gpu - {"onnxruntime-gpu"} == extra("serve-core")


def test_serve_gpu_installs_once_into_its_own_venv(tmp_path: Path) -> None:
    for f in ("Makefile", "pyproject.toml"):
        shutil.copy(REPO / f, tmp_path / f)
    first = make_n("serve-gpu", tmp_path)
    assert "uninstall" not in first
    installs = [ln for ln in first.splitlines() if "pip install" in ln and "-e" in ln]
    assert installs == [".venv-gpu/bin/pip install -q -e '.[serve-gpu]'"]
    assert "CXR_PROVIDER=cuda" in first and ".venv-gpu/bin/python -m service" in first
    stamp = tmp_path / ".venv-gpu" / ".serve-gpu"
    stamp.parent.mkdir()
    stamp.touch()
    os.utime(stamp, (os.path.getmtime(tmp_path / "pyproject.toml") + 10,) * 2)
    again = make_n("serve-gpu", tmp_path)
    assert "pip" not in again and ".venv-gpu/bin/python -m service" in again


# ---------------------------------------------------------------- 5. no torch to serve
def test_serve_extras_need_no_torch() -> None:
    for name in ("serve", "serve-gpu", "serve-core"):
        deps = extra(name)
        assert not {d for d in deps if d.startswith("torch")}, name
    assert "torch" in extra("train")  # the parser does see torch where it is


def test_readme_says_what_make_test_installs() -> None:
    text = " ".join(README.read_text().split("## Layout")[0].split())
    for needle in ("torch==2.13.0", "CPU build", "several GB", "make system-deps",
                   "Prometheus, Chromium, chromedriver and DCMTK", "needs no torch"):  # fmt: skip
        assert needle in text, needle
    assert "system-deps:" in (REPO / "Makefile").read_text()


# ---------------------------------------------------------------- 6. example images
def test_example_png_is_a_small_8bit_grey_phantom() -> None:
    from PIL import Image

    png = EXAMPLES / "chest_phantom.png"
    assert png.stat().st_size < 200 * 1024
    with Image.open(png) as im:
        assert (im.format, im.mode, im.size) == ("PNG", "L", (512, 512))
        assert 20 < float(np.asarray(im).std())  # a picture, not a flat field


def test_example_dicom_is_synthetic_and_decodes() -> None:
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(EXAMPLES / "chest_phantom.dcm")
    assert ds.ConversionType == "SYN" and "SYNTHETIC" in str(ds.PatientName)
    assert ds.PatientID.startswith("SYNTHETIC") and "not a real patient" in ds.ImageComments
    assert (ds.Modality, ds.BodyPartExamined, ds.PhotometricInterpretation) == (
        "DX", "CHEST", "MONOCHROME2",
    )  # fmt: skip
    assert ds.pixel_array.shape == (256, 256) and ds.pixel_array.dtype == np.uint8


def test_make_examples_regenerates_the_shipped_files(tmp_path: Path) -> None:
    pytest.importorskip("scipy", reason="the phantom needs scipy (train extra)")
    import pydicom
    from PIL import Image

    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "make_examples.py"), "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    for name in ("chest_phantom.png",):
        with Image.open(tmp_path / name) as new, Image.open(EXAMPLES / name) as old:
            diff = np.abs(np.asarray(new, np.int16) - np.asarray(old, np.int16))
        assert diff.max() <= 1, name
    new_ds = pydicom.dcmread(tmp_path / "chest_phantom.dcm")
    old_ds = pydicom.dcmread(EXAMPLES / "chest_phantom.dcm")
    assert new_ds.SOPInstanceUID == old_ds.SOPInstanceUID  # UIDs are fixed
    diff = np.abs(new_ds.pixel_array.astype(np.int16) - old_ds.pixel_array.astype(np.int16))
    assert diff.max() <= 1
