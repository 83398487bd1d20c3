"""Core sharing: a lone call on the wide engine, a call beside another on the narrow one; the
setting that turns it on, through the app on real tiny weights."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from service.app import default_engine_factory
from service.inference.core_sharing import CoreSharingEngine
from service.inference.types import GenerateOptions


class _Gate:
    """An engine stand-in whose calls record its name; with ``blocking`` a ``generate`` call
    waits for ``release``."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log
        self.blocking = False
        self.entered, self.release = threading.Event(), threading.Event()
        self.fail = False
        self.model_facts = {"name": name}
        self.provider = f"{name}-provider"
        self.anatomy_graph = {"graph": name}

    def generate(self, images: list[np.ndarray], options: GenerateOptions) -> list[Any]:
        self.log.append(self.name)
        self.entered.set()
        if self.blocking and not self.release.wait(10):
            raise TimeoutError("never released")
        if self.fail:
            raise RuntimeError("engine failure")
        return [self.name] * len(images)

    def ground(self, image: np.ndarray, phrases: list[str], heatmap_hw: Any = None) -> list[Any]:
        self.log.append(self.name)
        return [self.name] * len(phrases)


def _pair() -> tuple[CoreSharingEngine, _Gate, _Gate, list[str]]:
    log: list[str] = []
    wide, narrow = _Gate("wide", log), _Gate("narrow", log)
    return CoreSharingEngine(wide, narrow), wide, narrow, log  # type: ignore[arg-type]


IMG = np.zeros((8, 8), np.float32)
OPTS = GenerateOptions()


def test_lone_calls_run_on_the_wide_engine() -> None:
    engine, _, _, log = _pair()
    told: list[str] = []
    engine.on_call = told.append
    for _ in range(3):
        assert engine.generate([IMG], OPTS) == ["wide"]
    assert engine.ground(IMG, ["right lung", "left lung"]) == ["wide", "wide"]
    assert log == told == ["wide"] * 4
    assert engine.model_facts == {"name": "wide"} and engine.provider == "wide-provider"
    assert engine.anatomy_graph == {"graph": "wide"}


def test_a_call_beside_a_running_one_runs_on_the_narrow_engine() -> None:
    engine, wide, _, log = _pair()
    told: list[str] = []
    engine.on_call = told.append
    wide.blocking = True
    first = threading.Thread(target=engine.generate, args=([IMG], OPTS))
    first.start()
    assert wide.entered.wait(10)
    assert engine.generate([IMG], OPTS) == ["narrow"]  # the wide call is still running
    assert engine.ground(IMG, ["heart"]) == ["narrow"]
    wide.release.set()
    first.join(10)
    wide.blocking = False
    assert engine.generate([IMG], OPTS) == ["wide"]  # alone again
    assert log == told == ["wide", "narrow", "narrow", "wide"]


def test_a_failed_call_frees_its_place() -> None:
    engine, wide, _, _ = _pair()
    wide.fail = True
    with pytest.raises(RuntimeError, match="engine failure"):
        engine.generate([IMG], OPTS)
    wide.fail = False
    assert engine.generate([IMG], OPTS) == ["wide"]  # not counted as still running


def test_share_cores_needs_two_engine_calls(make_settings: Callable[..., Any]) -> None:
    with pytest.raises(ValidationError, match="CXR_MAX_CONCURRENCY >= 2"):
        make_settings(share_cores=True, max_concurrency=1)
    assert make_settings(share_cores=True, max_concurrency=2).share_cores


def test_the_app_shares_cores_on_real_weights(
    make_client: Callable[..., Any], tiny_weights_dir: Path, encode_image: Callable[..., bytes],
    chest_image: Callable[..., np.ndarray],
) -> None:  # fmt: skip
    """With ``CXR_SHARE_CORES`` the service loads a wide and a one-thread engine of the same
    weights and serves reports through them."""
    settings = {"weights_dir": tiny_weights_dir, "provider": "cpu", "intra_op_threads": 2}
    png = encode_image(chest_image(), "PNG")
    with make_client(
        factory=default_engine_factory, share_cores=True, max_concurrency=2, **settings
    ) as c:
        engine = c.app.state.cxr.engine
        assert isinstance(engine, CoreSharingEngine)
        assert engine.wide.manifest.sha256 == engine.narrow.manifest.sha256  # type: ignore[attr-defined]
        r = c.post("/v1/report", files={"file": ("x.png", png, "image/png")})
        assert r.status_code == 200, r.text
        assert r.json()["findings"] or r.json()["impression"]
        text = c.get("/metrics").text  # one lone call (the engines' warm-ups not counted)
        assert 'cxr_engine_calls_total{engine="wide"} 1.0' in text
        assert 'cxr_engine_calls_total{engine="narrow"} 0.0' in text


def test_wide_and_narrow_engines_write_the_same_reports(
    tiny_weights_dir: Path, chest_image: Callable[..., np.ndarray]
) -> None:
    """Which engine serves a call must not change its report: ORT's kernels split work across
    threads by output block, so one thread and two give the same numbers (the shipped weights:
    identical on 17 images and 4 batches of four, ``docs/PERFORMANCE.md``)."""
    from service.inference.engine import OrtEngine

    wide = OrtEngine.from_weights(tiny_weights_dir, provider="cpu", threads=2, decoder_threads=2)
    narrow = OrtEngine.from_weights(tiny_weights_dir, provider="cpu", threads=1, decoder_threads=1)
    images = [chest_image(96, 80, seed) for seed in range(3)]
    for beam in (1, 3):
        opts = GenerateOptions(beam_size=beam, max_new_tokens=30)
        for a, b in zip(wide.generate(images, opts), narrow.generate(images, opts), strict=True):
            assert (a.text, a.entities) == (b.text, b.entities)
            assert [s.box for s in a.sentences] == [s.box for s in b.sentences]
