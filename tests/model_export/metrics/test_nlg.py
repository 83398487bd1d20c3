"""NLG metrics on hand-computed cases; one small METEOR call."""

from __future__ import annotations

import pytest

from model_export.metrics import nlg
from model_export.metrics.nlg import MeteorUnavailableError, nlg_scores, preprocess


def test_preprocess_as_released() -> None:
    assert preprocess("Heart  is normal.\nNo effusion.") == "heart is normal . no effusion ."


def test_bleu_and_rouge_by_hand() -> None:
    # "the heart is normal ." vs "the heart is large .": 1-grams 4/5, 2-grams 2/4, 3-grams 1/3,
    # 4-grams 0/2; equal lengths (no brevity penalty); LCS 4 of 5 -> ROUGE-L 0.8.
    s = nlg_scores(["The heart is normal."], ["the heart is large."], meteor=False)
    assert s["BLEU-1"] == pytest.approx(0.8, abs=1e-6)
    assert s["BLEU-2"] == pytest.approx((0.8 * 0.5) ** 0.5, abs=1e-6)
    assert s["BLEU-3"] == pytest.approx((0.8 * 0.5 / 3) ** (1 / 3), abs=1e-6)
    assert s["BLEU-4"] < 1e-3
    assert s["ROUGE-L"] == pytest.approx(0.8, abs=1e-9)
    assert "METEOR" not in s


def test_cider_perfect_copy_is_ten() -> None:
    refs = ["the heart is large .", "small left effusion noted ."]  # disjoint words: idf > 0
    assert nlg_scores(refs, refs, meteor=False)["CIDEr"] == pytest.approx(10.0)
    worse = nlg_scores(["the heart is large .", "the heart is large ."], refs, meteor=False)
    assert worse["CIDEr"] < 6.0


def test_length_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="references"):
        nlg_scores(["a"], ["a", "b"], meteor=False)


def test_meteor_without_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nlg.shutil, "which", lambda _: None)
    with pytest.raises(MeteorUnavailableError, match="Java"):
        nlg_scores(["a b"], ["a b"])


def test_meteor_one_call() -> None:
    import shutil

    if shutil.which("java") is None:
        pytest.skip("java absent: METEOR cannot run")
    s = nlg_scores(
        ["the heart is normal in size .", ""],
        ["the heart is normal in size .", "no pleural effusion ."],
    )
    # First pair identical, second empty: corpus METEOR strictly between 0 and 1.
    assert 0.2 < s["METEOR"] < 0.9
