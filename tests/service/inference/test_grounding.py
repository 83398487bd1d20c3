"""Sentence grounding helpers: node choice, heatmaps, boxes, confidences, sections."""

from __future__ import annotations

import numpy as np
import pytest

from model_export.ssacl import anatomy
from service.imaging.preprocess import resize_map
from service.inference.grounding import (
    box_in_pixels,
    entity_agreement,
    grid_map,
    language_confidence,
    normalise01,
    sentence_nodes,
    sentence_token_probs,
    split_sections,
    token_spans,
    upsample,
)


def blob_maps(g: int = 14) -> np.ndarray:
    maps = np.full((32, g, g), 1.0 / g**2, np.float32)
    maps[12] = 0.0
    maps[12, 10:12, 2:4] = 1.0  # node 12 (right CP angle): lower left of the image
    maps[19] = 0.0
    maps[19, 10:12, 10:12] = 1.0  # node 19 (left CP angle): lower right
    return maps


def test_normalise01() -> None:
    out = normalise01(np.array([[2.0, 4.0], [3.0, 6.0]]))
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    assert not normalise01(np.ones((3, 3))).any()


def test_grid_map_smooths_and_combines() -> None:
    maps = blob_maps()
    one = grid_map(maps, [12])
    assert one.shape == (14, 14) and one.max() == pytest.approx(1.0)
    assert one[10:12, 2:4].mean() > one[2:4, 10:12].mean() + 0.5
    assert 0 < one[9, 2] < 1  # spread by the sigma 1.5 blur
    both = grid_map(maps, [12, 19])
    assert both[10:12, 10:12].mean() > 0.8 and both[10:12, 2:4].mean() > 0.8


def test_upsample_and_box_in_original_pixels() -> None:
    g = grid_map(blob_maps(), [12])
    h, w = 700, 500
    heat = upsample(g, h, w)
    assert heat.shape == (h, w) and heat.dtype == np.float32
    assert heat.min() == 0.0 and heat.max() == pytest.approx(1.0)
    x0, y0, x1, y1 = box_in_pixels(g, h, w)
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    # the blob covers grid cells x 2..3, y 10..11 of 14
    cx, cy = (x0 + x1) / 2 / w * 14, (y0 + y1) / 2 / h * 14
    assert cx == pytest.approx(3.0, abs=0.6) and cy == pytest.approx(11.0, abs=0.6)
    assert (x1 - x0) < w / 2 and (y1 - y0) < h / 2


@pytest.mark.parametrize("hw", [(700, 500), (3, 5), (14, 14)])
def test_upsample_matches_resize_map(hw: tuple[int, int]) -> None:
    g = grid_map(blob_maps(), [19])
    ref = resize_map(g, *hw)
    ref = (ref - ref.min()) / (ref.max() - ref.min())
    np.testing.assert_allclose(upsample(g, *hw), ref, atol=2e-6)


def test_sentence_nodes() -> None:
    rcp, lcp = (
        anatomy.node_id("right costophrenic angle"),
        anatomy.node_id("left costophrenic angle"),
    )
    heart = anatomy.node_id("cardiac silhouette")
    # explicit nodes inside the candidates are kept, deepest first
    assert sentence_nodes((1, rcp), ("lungs",)) == (rcp, 1)
    # outside the candidates: only the ones inside are kept
    assert sentence_nodes((rcp, heart), ("mediastinum",)) == (heart,)
    # none inside: the sentence's own nodes win
    assert sentence_nodes((rcp, lcp), ("mediastinum",)) == (rcp, lcp)
    # no anatomy: candidate roots, or the chest when all roots are candidates
    assert sentence_nodes((), ("lungs", "abdomen")) == (1, 4)
    assert sentence_nodes((), anatomy.ROOT_NAMES) == (0,)


def test_confidences() -> None:
    assert language_confidence([0.5, 0.125]) == pytest.approx(0.25)
    assert language_confidence([]) == 1.0
    probs = {"Cardiomegaly": 0.8, "Pleural Effusion": 0.3, "Edema": 0.1}
    assert entity_agreement({"Cardiomegaly": 1}, probs) == pytest.approx(0.8)
    assert entity_agreement({"Pleural Effusion": 0, "Edema": None}, probs) == pytest.approx(0.7)
    assert entity_agreement({"Cardiomegaly": -1, "Pleural Effusion": 0}, probs) == pytest.approx(
        0.75
    )
    assert entity_agreement({}, probs) == 1.0


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("the heart is normal.", ("the heart is normal.", None)),
        (
            "FINDINGS: heart normal. IMPRESSION: no acute disease.",
            ("heart normal.", "no acute disease."),
        ),
        ("findings: a. b. impression:", ("a. b.", None)),
        ("", (None, None)),
    ],
)
def test_split_sections(text: str, want: tuple[str | None, str | None]) -> None:
    assert split_sections(text) == want


def test_token_spans_and_sentence_probs() -> None:
    vocab = ["the", "heart", "is", "normal", ".", "no", "effusion"]

    def decode(ids: list[int]) -> str:
        return " ".join(vocab[i] for i in ids).replace(" .", ".")

    toks = [0, 1, 2, 3, 4, 5, 6, 4]
    text = decode(toks)
    assert text == "the heart is normal. no effusion."
    ends = token_spans(toks, decode)
    assert ends == [3, 9, 12, 19, 20, 23, 32, 33]
    probs = [0.1 * (i + 1) for i in range(8)]
    per = sentence_token_probs(text, ["the heart is normal.", "no effusion."], ends, probs)
    assert per == [probs[:5], probs[5:]]
