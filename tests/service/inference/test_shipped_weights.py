"""The default weights in ``weights/`` (what ``make serve`` loads): verified, small, working."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_export.ssacl import anatomy
from service.inference.engine import OrtEngine
from service.inference.types import GenerateOptions

WEIGHTS = Path(__file__).resolve().parents[3] / "weights"


@pytest.fixture(scope="module")
def engine() -> OrtEngine:
    if not (WEIGHTS / "manifest.json").is_file():
        pytest.skip(f"no shipped weights at {WEIGHTS}")
    return OrtEngine.from_weights(WEIGHTS, provider="cpu", threads=1)


def test_weights_fit_the_size_budget() -> None:
    if not WEIGHTS.is_dir():
        pytest.skip(f"no shipped weights at {WEIGHTS}")
    total = sum(p.stat().st_size for p in WEIGHTS.rglob("*") if p.is_file())
    assert total < 100 * 1024 * 1024, f"weights/ is {total / 2**20:.1f} MiB"
    assert (WEIGHTS / "MODEL_CARD.md").is_file()


def test_shipped_model_writes_a_grounded_report(engine: OrtEngine) -> None:
    from model_export.data.phantom import generate_phantom

    img = generate_phantom(123_456_789, 300).image  # a size the model was not trained at
    (rep,) = engine.generate([img], GenerateOptions(beam_size=3, max_new_tokens=100))
    assert engine.model_facts["name"] == "ssacl-small"
    assert len(rep.text.split()) >= 5 and rep.sentences
    assert set(rep.entity_probs) == set(anatomy.CHEXPERT_LABELS)
    for s in rep.sentences:
        assert s.node_ids and all(0 <= n < anatomy.NUM_NODES for n in s.node_ids)
        x0, y0, x1, y1 = s.box
        assert 0 <= x0 < x1 <= 300 and 0 <= y0 < y1 <= 300
        assert s.heatmap is not None and s.heatmap.shape == (300, 300)
        assert 0.0 <= s.confidence <= 1.0 and np.isfinite(s.heatmap).all()
