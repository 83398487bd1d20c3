"""Phantom generator: determinism, exact nested masks, findings inside their anatomy, labels."""

from __future__ import annotations

from collections import Counter
from functools import cache

import numpy as np
import pytest

from model_export.data.phantom import (
    PhantomConfig,
    PhantomSample,
    generate_phantom,
    label_vector,
)
from model_export.data.phantom.types import NO_SEVERITY, SEVERITIES
from model_export.ssacl.anatomy import CHEXPERT_LABELS, FINDINGS, NUM_NODES, TREE

SEEDS = range(24)


@cache
def phantom(seed: int, size: int = 96) -> PhantomSample:
    return generate_phantom(seed, size)


def test_same_seed_is_identical_and_seeds_differ() -> None:
    a, b, c = generate_phantom(7, 128), generate_phantom(7, 128), generate_phantom(8, 128)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.report == b.report and a.seed == 7
    assert [f.label for f in a.findings] == [f.label for f in b.findings]
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.masks, c.masks)


def test_image_shape_range_and_contrast() -> None:
    for seed in range(6):
        p = phantom(seed, 224)
        assert p.image.shape == (224, 224) and p.image.dtype == np.float32
        assert p.masks.shape == (NUM_NODES, 224, 224) and p.masks.dtype == bool
        assert 0.0 <= p.image.min() and p.image.max() <= 1.0
        assert p.image.std() > 0.1
        lungs, mediastinum, abdomen = (p.image[p.masks[i]].mean() for i in (1, 2, 4))
        assert lungs < mediastinum - 0.15, (seed, lungs, mediastinum)
        assert lungs < abdomen - 0.15, (seed, lungs, abdomen)


@pytest.mark.parametrize("seed", SEEDS)
def test_masks_nest_and_parents_cover_children(seed: int) -> None:
    m = phantom(seed).masks
    assert all(m[i].any() for i in range(NUM_NODES)), "every node is visible"
    for parent, kids in TREE:
        for kid in kids:
            assert not (m[kid] & ~m[parent]).any(), f"node {kid} leaks out of {parent}"
    for parent in (0, 1, 2, 3, 5, 6):  # these are exactly the union of their children
        union = np.logical_or.reduce(m[list(dict(TREE)[parent])])
        np.testing.assert_array_equal(m[parent], union)
    zones = ((11, 7, 8, 9), (18, 14, 15, 16))
    for side in zones:  # lung zones partition the lung
        assert int(sum(m[z].sum() for z in side)) == int(np.logical_or.reduce(m[list(side)]).sum())


@pytest.mark.parametrize("seed", SEEDS)
def test_findings_lie_inside_their_nodes(seed: int) -> None:
    p = phantom(seed)
    for f in p.findings:
        assert f.label in FINDINGS
        assert f.mask.shape == p.image.shape and f.mask.dtype == bool and f.mask.any()
        assert f.node_ids and all(0 <= n < NUM_NODES for n in f.node_ids)
        assert list(f.node_ids) == sorted(set(f.node_ids))
        region = np.logical_or.reduce(p.masks[list(f.node_ids)])
        assert not (f.mask & ~region).any(), f"{f.label} leaks out of {f.node_ids}"
        assert f.side in (None, "right", "left", "bilateral")
        assert f.severity in (*SEVERITIES, NO_SEVERITY)


def test_findings_use_the_expected_anatomy() -> None:
    right_lung, left_lung = set(range(7, 14)), set(range(14, 21))
    seen = set()
    for seed in range(150):
        for f in phantom(seed, 64).findings:
            nodes = set(f.node_ids)
            seen.add(f.label)
            if f.label == "Cardiomegaly":
                assert nodes == {25}
            elif f.label == "Enlarged Cardiomediastinum":
                assert nodes == {22}
            elif f.label == "Fracture":
                assert nodes == ({30} if f.side == "right" else {31})
            elif f.detail == "ett":
                assert nodes == {21}
            elif f.label == "Pleural Effusion":
                assert nodes & {9, 12, 13, 16, 19, 20}
            elif f.label == "Pneumothorax":
                assert nodes <= {11, 7, 8, 18, 14, 15}
            elif f.side == "right" and f.label != "Support Devices":
                assert nodes <= right_lung
            elif f.side == "left":
                assert nodes <= left_lung
    assert seen == set(FINDINGS)


def test_every_label_is_frequent_and_normals_are_a_quarter() -> None:
    counts: Counter[str] = Counter()
    n = 300
    for seed in range(1000, 1000 + n):
        labels = generate_phantom(seed, 64).labels
        counts.update(CHEXPERT_LABELS[i] for i in np.flatnonzero(labels))
    assert 0.18 * n <= counts["No Finding"] <= 0.38 * n, counts
    for label in FINDINGS:
        assert counts[label] >= 0.05 * n, (label, counts[label])


def test_label_vector_rules() -> None:
    for seed in SEEDS:
        p = phantom(seed)
        present = {f.label for f in p.findings}
        assert p.labels.shape == (14,) and p.labels.dtype == np.float32
        assert {CHEXPERT_LABELS[i] for i in np.flatnonzero(p.labels[1:]) + 1} == present
        assert p.labels[0] == float(not present - {"Support Devices"})
    assert label_vector([])[0] == 1.0


@pytest.mark.parametrize("seed", SEEDS)
def test_report_sentences_carry_anatomy_and_labels(seed: int) -> None:
    p = phantom(seed)
    assert p.report == f"{p.findings_text} {p.impression_text}"
    body = [s for s in p.sentences if s.section == "findings"]
    impression = [s for s in p.sentences if s.section == "impression"]
    assert " ".join(s.text for s in body) == p.findings_text
    assert " ".join(s.text for s in impression) == p.impression_text and impression
    for s in p.sentences:
        assert s.node_ids and all(0 <= n < NUM_NODES for n in s.node_ids), s
        assert s.text.endswith(".") and "." not in s.text[:-1], s.text
        assert s.finding is None or s.finding in FINDINGS
        assert not s.positive or s.finding is not None
    for f in p.findings:  # every finding is stated positively with its own anatomy
        assert any(s.positive and s.finding == f.label and s.node_ids == f.node_ids for s in body)
    negated = {s.finding for s in p.sentences if not s.positive}
    assert not negated & {f.label for f in p.findings}, "a present finding is also negated"


def test_reports_vary() -> None:
    normals = [phantom(s, 64).findings_text for s in range(200) if not phantom(s, 64).findings]
    assert len(set(normals)) > 0.6 * len(normals) > 10


def test_labels_do_not_depend_on_size() -> None:
    for seed in range(8):
        np.testing.assert_array_equal(phantom(seed, 96).labels, phantom(seed, 224).labels)


def test_config_prior_and_validation() -> None:
    normal = PhantomConfig(p_normal=1.0, p_devices_if_normal=0.0)
    assert all(not generate_phantom(s, 64, normal).findings for s in range(5))
    weights = tuple(float(label == "Pneumothorax") for label in FINDINGS)
    only_ptx = PhantomConfig(p_normal=0.0, n_findings=(1, 1), label_weights=weights)
    assert {f.label for s in range(5) for f in generate_phantom(s, 64, only_ptx).findings} == {
        "Pneumothorax"
    }
    with pytest.raises(ValueError, match="label_weights"):
        PhantomConfig(label_weights=(1.0,))
    with pytest.raises(ValueError, match="n_findings"):
        PhantomConfig(n_findings=(0, 2))
    with pytest.raises(ValueError, match="size"):
        generate_phantom(0, 16)
