"""Sentence splitter edge cases (hand-written text)."""

from __future__ import annotations

import pytest

from model_export.ssacl.text.sentences import split_sentences, tidy_decoded


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "The heart is normal. The lungs are clear.",
            ["The heart is normal.", "The lungs are clear."],
        ),
        ("Nodule measures 1.5 cm. No effusion.", ["Nodule measures 1.5 cm.", "No effusion."]),
        (
            "Atelectasis vs. scarring, e.g. at the base. Seen by Dr. Smith.",
            ["Atelectasis vs. scarring, e.g. at the base.", "Seen by Dr. Smith."],
        ),
        ("Image no. 2 shows it. Approx. 2 cm.", ["Image no. 2 shows it.", "Approx. 2 cm."]),
        ("i.e. unchanged. Done.", ["i.e. unchanged.", "Done."]),
        (
            "1. Cardiomegaly. 2. Small right effusion. 3) No pneumothorax.",
            ["Cardiomegaly.", "Small right effusion.", "No pneumothorax."],
        ),
        ("Findings below. 1.Severe arthritis.", ["Findings below.", "Severe arthritis."]),
        (
            "Normal chest x-XXXX. XXXX XXXX are intact.",
            ["Normal chest x-XXXX.", "XXXX XXXX are intact."],
        ),
        ("Comparison XXXX.", ["Comparison XXXX."]),
        (
            "the heart is normal . the lungs are clear .",
            ["the heart is normal.", "the lungs are clear."],
        ),
        ("heart normal. lungs clear", ["heart normal.", "lungs clear"]),
        ("No acute abnormality..", ["No acute abnormality."]),
        ("Heart   size\tnormal.    Lungs clear.", ["Heart size normal.", "Lungs clear."]),
        ("Is there effusion? No. Stable!", ["Is there effusion?", "No.", "Stable!"]),
    ],
)
def test_split(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_newlines_headings_and_wrapped_lines() -> None:
    text = (
        "FINDINGS: The heart\nis enlarged.\nNo effusion.\n\n"
        "IMPRESSION:\n1. Cardiomegaly.\n2. Nothing else"
    )
    assert split_sentences(text) == [
        "The heart is enlarged.",
        "No effusion.",
        "Cardiomegaly.",
        "Nothing else",
    ]


def test_inline_heading_is_a_boundary() -> None:
    assert split_sentences("FINDINGS: Lungs clear IMPRESSION: Normal.") == [
        "Lungs clear",
        "Normal.",
    ]


@pytest.mark.parametrize("text", ["", "   ", "\n\n", "1. 2. 3.", ". . .", "IMPRESSION:"])
def test_never_empty_or_bare_enumerators(text: str) -> None:
    out = split_sentences(text)
    assert all(s.strip() and any(c.isalpha() for c in s) for s in out)
    assert out == []


def test_words_are_preserved() -> None:
    text = "Mild cardiomegaly, i.e. 1.2 ratio. No. 3 view: clear lungs. Vs. prior, stable."
    joined = " ".join(split_sentences(text))
    assert joined.split() == text.split()


def test_tidy_decoded_closes_word_internal_hyphens() -> None:
    assert tidy_decoded("ill - defined opacity.") == "ill-defined opacity."
    assert (
        tidy_decoded("a plate - like right - sided density") == "a plate-like right-sided density"
    )
    assert tidy_decoded("lungs clear - ") == "lungs clear - "  # no word after: left as it is
    assert tidy_decoded("- 5 mm") == "- 5 mm"
