"""Coherent decoding: repeated, contradicting and garbled sentences are dropped."""

from __future__ import annotations

import pytest

from model_export.ssacl.text import split_sentences
from service.inference.coherence import (
    REASONS,
    coherent_sentences,
    kept_text,
    normalise,
    repetition_contradiction_counts,
    sentence_facts,
)

EFFUSION, OPACITY, CARDIO = "Pleural Effusion", "Lung Opacity", "Cardiomegaly"


def dropped(**counts: int) -> dict[str, int]:
    return dict.fromkeys(REASONS, 0) | counts


def test_normalise_collapses_case_punctuation_and_space() -> None:
    assert normalise("  No  pleural effusion , or PNEUMOTHORAX. ") == (
        "no pleural effusion or pneumothorax"
    )


def test_facts_carry_state_and_anatomy() -> None:
    (fact,) = sentence_facts("Small right pleural effusion.")
    assert (fact.finding, fact.code, fact.nodes, fact.generic) == (EFFUSION, 1, (12,), False)
    (fact,) = sentence_facts("normal heart size and mediastinal contours.")
    assert (fact.finding, fact.code) == (CARDIO, 0)


def test_exact_repeat_ignores_case_and_punctuation() -> None:
    report = ["No pleural effusion.", "The heart is normal.", "no pleural effusion"]
    assert coherent_sentences(report, ()) == ([0, 1], dropped(repeated=1))


def test_paraphrased_repeat_real_example() -> None:
    report = [
        "there is a patchy opacity in the right mid lung zone.",
        "no pneumothorax.",
        "opacity in the right mid lung zone.",
    ]
    assert coherent_sentences(report, (OPACITY,)) == ([0, 1], dropped(repeated=1))


def test_same_finding_elsewhere_is_not_a_repeat() -> None:
    report = ["opacity in the right mid lung zone.", "opacity in the right lower lobe."]
    assert coherent_sentences(report, ())[0] == [0, 1]


def test_normal_heart_then_cardiomegaly_real_example() -> None:
    report = [
        "normal heart size and mediastinal contours.",
        "the lungs are clear.",
        "cardiomegaly.",
    ]
    assert coherent_sentences(report, ()) == ([0, 1], dropped(contradicts_report=1))
    # The entity head predicts cardiomegaly: the normal-heart sentence goes instead.
    assert coherent_sentences(report, (CARDIO,)) == ([1, 2], dropped(contradicts_entities=1))


def test_positive_finding_stated_absent_vs_entities() -> None:
    report = ["heart size is normal.", "no pleural effusion or pneumothorax."]
    assert coherent_sentences(report, (EFFUSION,)) == ([0], dropped(contradicts_entities=1))
    assert coherent_sentences(report, ()) == ([0, 1], dropped())


def test_unpredicted_positive_dropped_only_on_request() -> None:
    report = ["the heart is normal.", "small right pleural effusion."]
    assert coherent_sentences(report, ())[0] == [0, 1]
    kept, counts = coherent_sentences(report, (), drop_unpredicted_positive=True)
    assert (kept, counts) == ([0], dropped(contradicts_entities=1))


def test_opposite_sides_do_not_contradict() -> None:
    report = ["no left pleural effusion.", "small right pleural effusion."]
    assert coherent_sentences(report, ())[0] == [0, 1]


@pytest.mark.parametrize(
    ("report", "kept", "reason"),
    [
        (["right pleural effusion.", "left pleural effusion."], [0], "contradicts_report"),
        (["opacity in the right lower lung zone.", "opacity in the left upper lobe."], [0],
         "contradicts_report"),
        (["right pleural effusion.", "bilateral pleural effusions."], [0], "contradicts_report"),
        (["bilateral pleural effusions.", "right pleural effusion."], [0], "repeated"),
        (["no right effusion.", "left pleural effusion."], [0, 1], None),
    ],
)  # fmt: skip
def test_laterality(report: list[str], kept: list[int], reason: str | None) -> None:
    got, counts = coherent_sentences(report, ())
    assert got == kept
    assert counts == (dropped(**{reason: 1}) if reason else dropped())


def test_one_side_then_unsided_then_bilateral() -> None:
    report = ["right effusion.", "effusion.", "bilateral effusions."]
    assert coherent_sentences(report, ()) == ([0], dropped(repeated=1, contradicts_report=1))


def test_unsided_mention_after_sided_is_a_repeat() -> None:
    assert coherent_sentences(["right pleural effusion.", "pleural effusion."], ())[0] == [0]


def test_uncertain_never_contradicts() -> None:
    report = ["no pneumothorax.", "possible small right pneumothorax."]
    assert coherent_sentences(report, ())[0] == [0, 1]


def test_support_devices_are_multi_instance() -> None:
    report = ["endotracheal tube in place.", "no central venous catheter.", "ng tube in place."]
    assert coherent_sentences(report, ("Support Devices",)) == ([0, 1, 2], dropped())
    same_device = ["endotracheal tube in place.", "the endotracheal tube has been removed."]
    assert coherent_sentences(same_device, ()) == ([0], dropped(contradicts_report=1))
    assert coherent_sentences([report[0], "et tube in place."], ()) == ([0], dropped(repeated=1))
    tubes = ["right chest tube in place.", "bilateral chest tubes are present."]
    assert coherent_sentences(tubes, ())[0] == [0, 1]  # no bilateral rule for devices


def test_exact_repeat_of_a_sentence_without_findings() -> None:
    report = ["Degenerative changes of the spine.", "degenerative changes of the spine"]
    assert coherent_sentences(report, ()) == ([0], dropped(repeated=1))


def test_no_finding_against_acute_findings_only() -> None:
    acute = ["no acute cardiopulmonary process.", "right lower lobe pneumonia."]
    assert coherent_sentences(acute, ()) == ([0], dropped(contradicts_report=1))
    chronic = ["no acute cardiopulmonary process.", "stable cardiomegaly."]
    assert coherent_sentences(chronic, (CARDIO,))[0] == [0, 1]
    assert coherent_sentences(acute, ("Pneumonia",)) == ([1], dropped(contradicts_entities=1))


def test_garbled_loop_dropped() -> None:
    report = ["the the the the", "the heart is normal.", "right lower lobe right lower lobe."]
    assert coherent_sentences(report, ()) == ([1], dropped(garbled=2))


def test_coherent_report_untouched() -> None:
    text = (
        "PA and lateral views of the chest. The heart size is normal. The lungs are clear. "
        "No pleural effusion or pneumothorax. Degenerative changes of the spine."
    )
    sentences = split_sentences(text)
    kept, counts = coherent_sentences(sentences, ())
    assert kept == list(range(5)) and counts == dropped()
    assert kept_text(text, sentences, kept) == text
    assert repetition_contradiction_counts(sentences) == {
        "garbled": 0,
        "repeated": 0,
        "contradicts_report": 0,
        "sentences": 5,
    }


def test_never_returns_empty() -> None:
    # Both deny a predicted finding; the first is kept, the other counts as dropped.
    report = ["no pleural effusion.", "no pleural effusion."]
    assert coherent_sentences(report, (EFFUSION,)) == ([0], dropped(contradicts_entities=1))
    assert coherent_sentences(["the the the"], ()) == ([0], dropped())
    assert coherent_sentences([], ()) == ([], dropped())


def test_counts_judge_against_every_earlier_sentence() -> None:
    report = ["normal heart size.", "cardiomegaly.", "the heart is enlarged.", "cardiomegaly."]
    counts = repetition_contradiction_counts(report)
    assert counts == {"garbled": 0, "repeated": 2, "contradicts_report": 1, "sentences": 4}
    # Dropping judges against the kept sentences only: both cardiomegaly statements contradict.
    assert coherent_sentences(report, ()) == ([0], dropped(contradicts_report=3))


def test_kept_text_cuts_sentences_and_keeps_headings() -> None:
    text = "FINDINGS: Normal heart size. Cardiomegaly. IMPRESSION: No acute process."
    sentences = split_sentences(text)
    kept, _ = coherent_sentences(sentences, ())
    assert kept == [0, 2]
    assert kept_text(text, sentences, kept) == (
        "FINDINGS: Normal heart size. IMPRESSION: No acute process."
    )
    assert kept_text("a.  b.", ["a.", "c."], [0]) == "a."  # not found verbatim: joined
