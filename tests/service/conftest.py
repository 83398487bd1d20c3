"""Service test fixtures: a deterministic ``FakeEngine`` and app/client factories.

Route tests that only check the API contract use the ``engine_factory`` fixture, so the same
tests can later run against the real ONNX engine (override ``engine_factory``, e.g. with
``lambda s: OrtEngine.from_weights(tiny_weights_dir, "cpu", 1)``). Tests of fake-specific
behaviour (recorded batch sizes, slowness, failures) build a ``FakeEngine`` via ``fake_engine``.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from model_export.ssacl import anatomy
from model_export.ssacl.text.mentions import find_mentions
from service.api.access_log import LOGGER_NAME, JsonFormatter
from service.app import create_app
from service.inference.types import Engine, GenerateOptions, Grounding, Report, SentenceGrounding
from service.settings import Settings

# entity -> (sentence, anatomy node) used by the fake decoder
_SENTENCES = {
    "Cardiomegaly": ("The cardiac silhouette is enlarged.", "cardiac silhouette"),
    "Pleural Effusion": ("Small right pleural effusion.", "right costophrenic angle"),
    "Pneumothorax": ("Small left apical pneumothorax.", "left apical zone"),
    "Atelectasis": ("Bibasilar atelectasis.", "right lower lung zone"),
    "Consolidation": ("Consolidation in the left lower lobe.", "left lower lung zone"),
}
_NORMAL = ("No acute osseous abnormality.", "skeletal structures")


def _gaussian(h: int, w: int, cx: float, cy: float, sigma: float) -> np.ndarray:
    """(h, w) float32 Gaussian in [0, 1]; centre and sigma as fractions of the size."""
    y = (np.arange(h, dtype=np.float32) + 0.5) / h
    x = (np.arange(w, dtype=np.float32) + 0.5) / w
    g = np.exp(-((x[None, :] - cx) ** 2 + (y[:, None] - cy) ** 2) / (2 * sigma**2))
    return g.astype(np.float32)


def _centre(node: int) -> tuple[float, float]:
    return 0.2 + 0.6 * ((node * 7) % 10) / 9, 0.2 + 0.6 * ((node * 3) % 10) / 9


def _box(h: int, w: int, node: int, sigma: float) -> tuple[int, int, int, int]:
    """Box of the half-maximum disc of the node's Gaussian, in (h, w) pixels."""
    cx, cy = _centre(node)
    r = sigma * math.sqrt(2 * math.log(2))
    x0, x1 = max(0, int((cx - r) * w)), min(w, math.ceil((cx + r) * w))
    y0, y1 = max(0, int((cy - r) * h)), min(h, math.ceil((cy + r) * h))
    return x0, y0, x1, y1


class FakeEngine:
    """Implements ``Engine`` deterministically from the image content (no model).

    The mean brightness picks the entities; each entity gives one sentence on a fixed node;
    heatmaps are Gaussians placed by node id. ``delay_s`` makes every call slow;
    ``fail_when(image)`` makes ``generate`` raise for matching images.
    """

    sigma = 0.12

    def __init__(
        self, delay_s: float = 0.0, fail_when: Callable[[np.ndarray], bool] | None = None
    ) -> None:
        self.delay_s = delay_s
        self.fail_when = fail_when
        self.batch_sizes: list[int] = []
        self.options: list[GenerateOptions] = []
        self.ground_calls = 0
        self._lock = threading.Lock()

    @property
    def model_facts(self) -> dict[str, object]:
        return {
            "name": "fake-ssacl",
            "version": "0.0.0-test",
            "sha256": "f" * 64,
            "input_size": [1, 224, 224],
            "labels": list(anatomy.CHEXPERT_LABELS),
        }

    @property
    def provider(self) -> str:
        return "CPUExecutionProvider"

    @property
    def anatomy_graph(self) -> dict[str, object]:
        return anatomy.graph_dict()

    def generate(self, images: list[np.ndarray], options: GenerateOptions) -> list[Report]:
        with self._lock:
            self.batch_sizes.append(len(images))
            self.options.append(options)
        time.sleep(self.delay_s)
        if self.fail_when is not None and any(self.fail_when(im) for im in images):
            raise RuntimeError("fake engine failure")
        return [self._report(im, options) for im in images]

    def _report(self, image: np.ndarray, options: GenerateOptions) -> Report:
        t0 = time.perf_counter()
        mean = float(image.mean())
        probs = {
            lab: round(0.5 + 0.5 * math.cos((i + 1) * (10 * mean + 1)), 4)
            for i, lab in enumerate(anatomy.CHEXPERT_LABELS)
        }
        ranked = sorted((p, lab) for lab, p in probs.items() if lab in _SENTENCES)
        entities = tuple(lab for p, lab in reversed(ranked) if p >= 0.5)[:3]
        t1 = time.perf_counter()
        sentences = [_SENTENCES[e] for e in entities] + [_NORMAL]
        h, w = image.shape
        hh, hw = options.heatmap_size or (h, w)
        grounded = tuple(
            SentenceGrounding(
                text=text,
                node_ids=(anatomy.node_id(node),),
                confidence=round(0.5 + 0.4 * probs.get(e, 0.5), 4),
                box=_box(h, w, anatomy.node_id(node), self.sigma),
                heatmap=_gaussian(hh, hw, *_centre(anatomy.node_id(node)), self.sigma)
                if options.heatmaps
                else None,
            )
            for e, (text, node) in zip((*entities, "normal"), sentences, strict=True)
        )
        findings = " ".join(s.text for s in grounded)
        impression = sentences[0][0] if entities else "No acute cardiopulmonary process."
        text = f"{findings} {impression}"
        return Report(
            text=text,
            findings=findings,
            impression=impression,
            entity_probs=probs,
            entities=entities,
            candidates=anatomy.roots_for_findings(entities),
            sentences=grounded,
            num_tokens=min(len(text.split()), options.max_new_tokens),
            timings={"encoder": t1 - t0, "decoding": time.perf_counter() - t1},
        )

    def ground(
        self, image: np.ndarray, phrases: list[str], heatmap_hw: tuple[int, int] | None = None
    ) -> list[Grounding]:
        with self._lock:
            self.ground_calls += 1
        time.sleep(self.delay_s)
        h, w = image.shape
        hh, hw = heatmap_hw or (h, w)
        out = []
        for p in phrases:
            found = find_mentions(p)
            node = anatomy.deepest(found[0].node_ids)[0] if found else 0
            score = (0.8 if found else 0.1) + 0.1 * float(image.mean())
            heat = _gaussian(hh, hw, *_centre(node), self.sigma)
            out.append(Grounding(p, node, score, _box(h, w, node, self.sigma), heat))
        return out


# ------------------------------------------------------------------ images
def chest_like(h: int = 256, w: int = 224, seed: int = 0) -> np.ndarray:
    """A smooth synthetic (h, w) float image in [0, 1] (two dark 'lungs' on a bright body)."""
    rng = np.random.default_rng(seed)
    body = 0.8 - 0.55 * (_gaussian(h, w, 0.32, 0.5, 0.14) + _gaussian(h, w, 0.68, 0.5, 0.14))
    return np.clip(body + 0.02 * rng.standard_normal((h, w)), 0, 1).astype(np.float32)


def encode(img: np.ndarray, fmt: str, bits: int = 8) -> bytes:
    """PNG (8 or 16 bit) or JPEG bytes of a float image in [0, 1]."""
    if bits == 16:
        pil = Image.fromarray((img * 65535).astype(np.uint16))
    else:
        pil = Image.fromarray((img * 255).astype(np.uint8))
    buf = io.BytesIO()
    pil.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def images() -> dict[str, bytes]:
    """Inputs: png8, png16, jpeg, png8_dark (synthetic); ct, mr, emri (pydicom test data)."""
    from pydicom.data import get_testdata_file

    img = chest_like()
    out = {"png8": encode(img, "PNG"), "png16": encode(img, "PNG", 16), "jpeg": encode(img, "JPEG")}
    out["png8_dark"] = encode(chest_like(seed=1) * 0.3, "PNG")
    for key, name in (("ct", "CT_small.dcm"), ("mr", "MR_small.dcm"), ("emri", "emri_small.dcm")):
        with open(str(get_testdata_file(name)), "rb") as f:
            out[key] = f.read()
    return out


# ------------------------------------------------------------------ apps and clients
EngineFactory = Callable[[Settings], Engine]


@pytest.fixture
def engine_factory() -> EngineFactory:
    """How route tests get their engine (override to run them on real weights)."""
    return lambda settings: FakeEngine()


@pytest.fixture
def fake_engine() -> Callable[..., FakeEngine]:
    """``fake_engine(delay_s=..., fail_when=...)`` -> a new FakeEngine."""
    return FakeEngine


def settings_for_test(**overrides: Any) -> Settings:
    """Settings for tests: no .env file, small limits unless overridden."""
    base: dict[str, Any] = {"batch_window_ms": 5.0, "log_level": "WARNING"}
    return Settings(_env_file=None, **{**base, **overrides})  # type: ignore[call-arg]


def wait_ready(client: TestClient, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while client.get("/readyz").status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError("app did not become ready")
        time.sleep(0.005)


@pytest.fixture
def make_client(engine_factory: EngineFactory) -> Callable[..., Any]:
    """``with make_client(engine=..., **settings) as c:`` -> a ready TestClient."""

    @contextmanager
    def _make(
        engine: Engine | None = None,
        factory: EngineFactory | None = None,
        ready: bool = True,
        raise_server_exceptions: bool = True,
        **settings: Any,
    ) -> Iterator[TestClient]:
        fac = factory or ((lambda s: engine) if engine is not None else engine_factory)
        app = create_app(settings_for_test(**settings), fac)
        with TestClient(app, raise_server_exceptions=raise_server_exceptions) as c:
            if ready:
                wait_ready(c)
            yield c

    return _make


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """``make_settings(**overrides)`` -> Settings without .env (see ``settings_for_test``)."""
    return settings_for_test


@pytest.fixture(scope="session")
def encode_image() -> Callable[..., bytes]:
    """``encode_image(float_img, "PNG" | "JPEG", bits=8)`` -> bytes."""
    return encode


@pytest.fixture(scope="session")
def chest_image() -> Callable[..., np.ndarray]:
    """``chest_image(h, w, seed)`` -> synthetic (h, w) float32 image in [0, 1]."""
    return chest_like


@pytest.fixture
def cxr_logs() -> Iterator[list[dict[str, Any]]]:
    """JSON records of the ``cxr`` loggers, as the service formats them (set log_level too)."""
    records: list[dict[str, Any]] = []
    fmt = JsonFormatter()

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(json.loads(fmt.format(record)))

    handler = _Keep()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


@pytest.fixture
def client(make_client: Callable[..., Any]) -> Iterator[TestClient]:
    """A ready client with default test settings and the ``engine_factory`` engine."""
    with make_client() as c:
        yield c


async def _serve_asgi(app: Any, sends: list[list[Callable[[Any], Any]]]) -> tuple[list[Any], str]:
    """Run the app's lifespan, wait until ready, then each group of ``send(client)`` calls
    concurrently, group after group: (each group's responses, the final /metrics text)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            for _ in range(500):
                if (await c.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.01)
            out = [await asyncio.gather(*(send(c) for send in group)) for group in sends]
            return out, (await c.get("/metrics")).text


@pytest.fixture(scope="session")
def serve_asgi() -> Callable[..., Any]:
    """``await serve_asgi(app, [[send, ...], ...])`` -> (responses per group, /metrics text)."""
    return _serve_asgi
