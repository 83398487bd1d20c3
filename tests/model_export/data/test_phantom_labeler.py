"""The rule-based CheXpert labeler recovers the phantom labels from the phantom reports."""

from __future__ import annotations

import numpy as np
import pytest

from model_export.data.phantom import generate_phantom

labeler = pytest.importorskip("model_export.ssacl.text.labeler")

N = 200


def test_labeler_recovers_phantom_labels() -> None:
    tp = fp = fn = 0
    sentences_ok = sentences = 0
    for seed in range(N):
        p = generate_phantom(seed, 32)  # the report does not depend on the image size
        pred = np.asarray(labeler.positive_vector(p.report)) == 1
        truth = p.labels == 1
        tp += int((pred & truth).sum())
        fp += int((pred & ~truth).sum())
        fn += int((~pred & truth).sum())
        for s in p.sentences:  # each sentence asserts exactly its own finding, if positive
            states = labeler.label_sentence(s.text)
            positive = {k for k, v in states.items() if v.code == 1 and k != "No Finding"}
            sentences_ok += positive == ({s.finding} if s.positive else set())
            sentences += 1
    micro_f1 = 2 * tp / (2 * tp + fp + fn)
    assert micro_f1 >= 0.95, (micro_f1, tp, fp, fn)
    assert sentences_ok >= 0.95 * sentences, (sentences_ok, sentences)
