"""``python -m service``: start-up refusals (workers, unusable CUDA) before any port is bound."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest

from service import __main__ as entry

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def uvicorn_calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    """Records ``uvicorn.run`` instead of serving; a CXR_-free environment, no .env."""
    import uvicorn

    for name in [n for n in os.environ if n.startswith("CXR_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append(kw))
    return calls


def test_more_than_one_worker_is_refused(uvicorn_calls, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        entry.main(["--workers", "4"])
    assert exc.value.code == 2 and uvicorn_calls == []
    err = capsys.readouterr().err
    assert "--workers 4" in err and "Prometheus" in err and "replicas" in err


@pytest.mark.parametrize("provider", ["cpu", "auto", None])
def test_cpu_and_auto_start(uvicorn_calls, monkeypatch, provider) -> None:
    if provider == "auto" and "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("auto probes nothing; kept to CPU-only hosts for a fixed expectation")
    if provider is not None:
        monkeypatch.setenv("CXR_PROVIDER", provider)
    entry.main(["--workers", "1", "--port", "8123"])
    ((kwargs,),) = [uvicorn_calls]
    assert kwargs["workers"] == 1 and kwargs["port"] == 8123


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_cuda_offered_but_unusable_is_refused(uvicorn_calls, monkeypatch, capsys) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime really offers CUDA")
    listed = ["CUDAExecutionProvider", *ort.get_available_providers()]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)
    monkeypatch.setenv("CXR_PROVIDER", "cuda")
    with pytest.raises(SystemExit) as exc:
        entry.main([])
    assert exc.value.code == 2 and uvicorn_calls == []
    assert "CXR_PROVIDER=cuda" in capsys.readouterr().err


def test_cuda_without_cuda_exits_with_the_reason(tmp_path: Path) -> None:
    """The real command, as `CXR_PROVIDER=cuda make serve` runs it, on this CPU-only build."""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime offers CUDA")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXR_")}
    env.update(CXR_PROVIDER="cuda", PYTHONPATH=str(REPO))
    r = subprocess.run(
        [sys.executable, "-m", "service", "--port", "1"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "cannot start: CXR_PROVIDER=cuda" in r.stderr and "onnxruntime-gpu" in r.stderr
    assert "Traceback" not in r.stderr and "Uvicorn running" not in r.stderr
