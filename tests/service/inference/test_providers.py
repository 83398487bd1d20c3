"""Execution providers: the one in use is reported, and ``cuda`` never falls back silently.

The CPU-only onnxruntime here cannot create CUDA; ORT then runs a session on the CPU with only
a warning, which is the silent fallback of an onnxruntime-gpu without usable CUDA libraries.
``cuda_offered`` makes ORT list CUDA (as onnxruntime-gpu does) to reproduce exactly that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from service.inference import session as S
from service.inference.engine import OrtEngine, WeightsError

WEIGHTS = Path(__file__).resolve().parents[3] / "weights"


pytestmark = pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")


@pytest.fixture
def cuda_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    if S.CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime really offers CUDA")
    listed = [S.CUDA, *ort.get_available_providers()]
    monkeypatch.setattr(ort, "get_available_providers", lambda: listed)


def test_probe_model_is_valid_onnx_and_runs() -> None:
    sess = S.create_session_from(S._probe_model(), [S.CPU], 1, "probe")
    x = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(S.run(sess, ["y"], {"x": x})[0], x)
    onnx = pytest.importorskip("onnx", reason="onnx (train extra) checks the hand-made bytes")
    onnx.checker.check_model(onnx.load_model_from_string(S._probe_model()), full_check=True)


@pytest.mark.parametrize("requested", ["cpu", "auto", "CPU"])
def test_cpu_and_auto_start_on_the_cpu(requested: str) -> None:
    if requested == "auto" and S.CUDA in ort.get_available_providers():
        pytest.skip("auto would take CUDA here")
    assert S.probe_providers(requested) == S.CPU


def test_cuda_refused_when_not_offered() -> None:
    if S.CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime offers CUDA")
    with pytest.raises(WeightsError, match=r"offers only .*onnxruntime-gpu.*CXR_PROVIDER=cpu"):
        S.probe_providers("cuda")


@pytest.mark.usefixtures("cuda_offered")
def test_cuda_refused_when_offered_but_sessions_fall_back() -> None:
    with pytest.raises(WeightsError, match=r"could not create its CUDA provider.*cuDNN"):
        S.probe_providers("cuda")
    assert S.probe_providers("auto") == S.CPU  # auto accepts the CPU


def test_provider_in_use_is_what_every_session_runs_on() -> None:
    cpu = S.create_session_from(S._probe_model(), [S.CPU], 1, "probe")
    assert S.provider_in_use({"encoder": cpu, "decoder_step": cpu}) == S.CPU
    with pytest.raises(WeightsError, match=r"\['decoder_step', 'encoder'\]"):
        S.verify_providers("cuda", {"encoder": cpu, "decoder_step": cpu})


@pytest.mark.usefixtures("cuda_offered")
def test_engine_refuses_cuda_fallback_on_the_shipped_weights() -> None:
    if not (WEIGHTS / "manifest.json").is_file():
        pytest.skip(f"no shipped weights at {WEIGHTS}")
    with pytest.raises(WeightsError, match="could not create its CUDA provider"):
        OrtEngine.from_weights(WEIGHTS, provider="cuda", threads=1)
