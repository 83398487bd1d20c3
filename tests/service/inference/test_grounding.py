"""Sentence grounding helpers: node choice, heatmaps, boxes, confidences, sections."""

from __future__ import annotations

import numpy as np
import pytest

from model_export.ssacl import anatomy
from service.inference.grounding import (
    entity_agreement,
    language_confidence,
    phrase_grounding,
    sentence_nodes,
    sentence_token_probs,
    split_sections,
    token_spans,
)
from service.inference.heatmaps import (
    MapRules,
    box_in_pixels,
    density,
    display_grid,
    node_density,
    reference_area,
    upsample,
)
from service.inference.map_quality import concentration, map_quality

RCP, LCP = 12, 19  # right / left costophrenic angle


def blob_maps(g: int = 14) -> np.ndarray:
    """Flat maps except two blobs: right CP angle lower left, left CP angle lower right."""
    maps = np.full((32, g, g), 1.0 / g**2, np.float32)
    maps[RCP] = 0.0
    maps[RCP, 10:12, 2:4] = 0.25  # a distribution over the patches, like the pooling weights
    maps[LCP] = 0.0
    maps[LCP, 10:12, 10:12] = 0.25
    return maps


def test_density_is_relative_to_uniform() -> None:
    d = density(blob_maps()[RCP])
    assert d.mean() == pytest.approx(1.0) and d.max() == pytest.approx(196 / 4)
    assert np.all(density(np.zeros((4, 4))) == 1.0)  # no mass: flat, never a division by 0


def test_flat_map_stays_flat_and_dim() -> None:
    rules = MapRules()
    flat = display_grid(density(np.ones((14, 14))), rules)
    assert flat.max() - flat.min() < 1e-6  # no stretch to full contrast
    assert flat.max() == pytest.approx(1.0 / rules.density_full_scale)
    peaked = display_grid(node_density(blob_maps(), [RCP]), rules)
    assert peaked.max() == pytest.approx(1.0) and peaked[2, 10] < 0.05


def test_membership_shows_half_inside_a_uniform_node_and_stays_dim_when_flat() -> None:
    rules = MapRules(smooth_sigma=0.0)
    maps = blob_maps()  # right CP angle uniform over 4 of 196 patches
    inside = display_grid(node_density(maps, [RCP]), rules, area=4.0)
    assert inside[10, 2] == pytest.approx(0.5) and inside[2, 10] == 0.0
    flat = display_grid(density(np.ones((14, 14))), rules, area=4.0)
    assert flat.max() - flat.min() < 1e-7 and flat.max() == pytest.approx(1 - 2 ** (-4 / 196))
    assert reference_area([RCP], MapRules(reference_entropy=(np.log(4.0),) * 32)) == (
        pytest.approx(4.0)
    )


def test_combined_nodes_keep_both_blobs_and_mass() -> None:
    both = node_density(blob_maps(), [RCP, LCP])
    assert both.mean() == pytest.approx(1.0)
    assert both[10:12, 2:4].mean() == pytest.approx(both[10:12, 10:12].mean())


def test_upsample_and_box_in_original_pixels() -> None:
    g = display_grid(node_density(blob_maps(), [RCP]), MapRules())
    h, w = 700, 500
    heat = upsample(g, h, w)
    assert heat.shape == (h, w) and heat.dtype == np.float32
    assert heat.min() >= 0.0 and heat.max() <= 1.0
    x0, y0, x1, y1 = box_in_pixels(g, h, w)
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    # the blob covers grid cells x 2..3, y 10..11 of 14
    cx, cy = (x0 + x1) / 2 / w * 14, (y0 + y1) / 2 / h * 14
    assert cx == pytest.approx(3.0, abs=0.6) and cy == pytest.approx(11.0, abs=0.6)
    assert (x1 - x0) < w / 2 and (y1 - y0) < h / 2


def test_map_quality_flat_is_zero_concentrated_and_consistent_is_high() -> None:
    rules = MapRules()
    maps = blob_maps()
    assert concentration(np.ones((14, 14)), None) == 0.0
    assert map_quality(maps, [5], rules) == 0.0  # right lung map is flat
    # the CP angle sits inside its parent (right lung) when the lung covers the lower left
    maps[5] = 0.0
    maps[5, 4:13, 1:6] = 1.0
    good = map_quality(maps, [RCP], rules)
    assert good > 0.5
    maps[5] = 0.0
    maps[5, 0:3, 8:13] = 1.0  # the "right lung" is now elsewhere: the child leaves its parent
    assert map_quality(maps, [RCP], rules) < 0.05 < good


def test_phrase_map_peaks_on_the_finding_inside_the_named_region() -> None:
    g = 14
    maps = np.full((32, g, g), 1.0 / g**2, np.float32)
    maps[5] = 0.0
    maps[5, 3:12, 1:6] = 1.0 / 45  # right lung: image left
    evidence = np.full((14, g, g), 0.05, np.float32)
    effusion = anatomy.CHEXPERT_LABELS.index("Pleural Effusion")
    evidence[effusion, 10:12, 2:4] = 0.9  # effusion at the right base
    evidence[effusion, 10:12, 10:12] = 0.9  # and evidence outside the named lung
    emb = np.eye(32, 8, dtype=np.float32)[:, :8]
    text = np.zeros(8, np.float32)
    patch = np.zeros((g * g, 8), np.float32)
    hw = (280, 280)
    got = phrase_grounding("small right pleural effusion", maps, evidence, patch, text, emb, hw, hw)
    assert got.method == "anatomy-map-x-finding-evidence"
    y, x = np.unravel_index(int(np.argmax(got.heatmap)), got.heatmap.shape)
    assert 10 <= y * g / hw[0] < 12 and 2 <= x * g / hw[1] < 4
    lung = phrase_grounding("right lung", maps, evidence, patch, text, emb, hw, hw)
    assert lung.method == "anatomy-map" and lung.node_id == 5
    x0, y0, x1, y1 = lung.box
    assert x1 <= 6 * 20 + 20 and x0 <= 2 * 20  # the box stays on the image's left


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


def test_evidence_power_sharpens_the_finding_map() -> None:
    from service.inference.grounding import phrase_density

    g = 14
    maps = np.full((32, g, g), 1.0 / g**2, np.float32)
    evidence = np.full((14, g, g), 0.5, np.float32)
    effusion = anatomy.CHEXPERT_LABELS.index("Pleural Effusion")
    evidence[effusion, 10, 2] = 1.0
    zeros = np.zeros((g * g, 4), np.float32)
    args = ("pleural effusion", maps, evidence, zeros, np.zeros(4, np.float32))
    d1, _, m1 = phrase_density(*args, anatomy.CHEXPERT_LABELS, 1.0)
    d4, _, m4 = phrase_density(*args, anatomy.CHEXPERT_LABELS, 4.0)
    assert m1 == m4 == "anatomy-map-x-finding-evidence"
    assert d1[10, 2] / d1[0, 0] == pytest.approx(2.0) and d4[10, 2] / d4[0, 0] == pytest.approx(
        16.0
    )


def test_evidence_sigma_smooths_the_evidence_before_the_power() -> None:
    from service.inference.grounding import phrase_density
    from service.inference.heatmaps import gaussian_smooth

    g = 14
    maps = np.full((32, g, g), 1.0 / g**2, np.float32)
    evidence = np.full((14, g, g), 0.1, np.float32)
    effusion = anatomy.CHEXPERT_LABELS.index("Pleural Effusion")
    evidence[effusion, 10, 3] = 0.9  # one spike patch
    zeros = np.zeros((g * g, 4), np.float32)
    args = ("pleural effusion", maps, evidence, zeros, np.zeros(4, np.float32))
    sharp, _, _ = phrase_density(*args, anatomy.CHEXPERT_LABELS, 2.0, 0.0)
    smooth, _, _ = phrase_density(*args, anatomy.CHEXPERT_LABELS, 2.0, 1.0)
    # the region is flat, so the density is (smoothed evidence) ** 2 scaled to mean 1
    want = gaussian_smooth(evidence[effusion], 1.0).astype(np.float64) ** 2
    np.testing.assert_allclose(smooth, want * want.size / want.sum(), rtol=1e-5)
    assert np.unravel_index(np.argmax(smooth), smooth.shape) == (10, 3)
    # smoothing spreads the spike: its neighbours gain, the peak's share falls
    assert smooth[10, 4] / smooth[0, 0] > sharp[10, 4] / sharp[0, 0]
    assert smooth[10, 3] < sharp[10, 3]


def test_evidence_support_keeps_the_peak_inside_the_named_region() -> None:
    """Strong evidence outside the named region (density < support x its peak) is not
    counted: "right pleural effusion" cannot peak on the left; without evidence inside the
    region, the region's own map is returned."""
    from model_export.ssacl.text import sentence_anatomy
    from service.inference.grounding import phrase_density, stated_findings

    g = 14
    maps = np.full((32, g, g), 1e-4, np.float32)
    _, findings = stated_findings("right pleural effusion")
    named = sentence_anatomy("right pleural effusion", findings)
    assert named and all("right" in anatomy.NODE_NAMES[n] for n in named)
    for n in named:  # the named region: the image's left third, density 0.3 of it elsewhere
        maps[n] = 0.3
        maps[n][:, :5] = 1.0
    evidence = np.full((14, g, g), 0.2, np.float32)
    effusion = anatomy.CHEXPERT_LABELS.index("Pleural Effusion")
    evidence[effusion, 10, 2] = 0.6  # on the named side
    evidence[effusion, 10, 11] = 0.9  # stronger, on the other side
    zeros = np.zeros((g * g, 4), np.float32)
    args = ("right pleural effusion", maps, evidence, zeros, np.zeros(4, np.float32))
    labels = anatomy.CHEXPERT_LABELS
    loose, _, _ = phrase_density(*args, labels, 8.0, 0.0, 0.0)
    kept, _, method = phrase_density(*args, labels, 8.0, 0.0, 0.5)
    assert np.unravel_index(np.argmax(loose), loose.shape) == (10, 11)  # (0.9/0.6)^8 x 0.3 > 1
    assert np.unravel_index(np.argmax(kept), kept.shape) == (10, 2)
    assert method == "anatomy-map-x-finding-evidence" and not kept[:, 5:].any()
    # the same region with no evidence in it: the region's map, named as such
    evidence[effusion, :, :5] = 0.0
    region, _, method = phrase_density(*args, labels, 8.0, 0.0, 0.5)
    assert method == "anatomy-map"
    assert region[0, 0] == pytest.approx(region.max()) and region[0, 10] < region[0, 0]
