"""Sentence splitting for radiology prose (pure Python).

Handles abbreviations (``e.g.``, ``i.e.``, ``vs.``, ``approx.``, ``Dr.``, ``No. 2``), decimals
(``1.5 cm``), numbered lists (``1. ... 2. ...``, the enumerators are dropped), section headings
(``IMPRESSION:``), IU de-identification tokens (``XXXX``), tokenised text with a space before
the full stop (``the heart is normal .``), lower-case text, wrapped lines and runs of spaces.
"""

from __future__ import annotations

import re

#: Abbreviations whose full stop never ends a sentence (lower case, final dot removed).
ABBREVIATIONS: frozenset[str] = frozenset(
    {"e.g", "i.e", "vs", "dr", "drs", "mr", "mrs", "st", "cf", "fig", "incl", "esp"}
)
#: Abbreviations that end a sentence only when a capitalised word follows ("2 cm. The").
_SOFT_ABBREVIATIONS = frozenset({"mm", "cm", "etc", "a.m", "p.m", "hx", "approx"})
_NUMBER_ABBREV = frozenset({"no", "nos", "nr"})  # "No. 2": no boundary when a digit follows

# A candidate boundary: sentence punctuation (with optional closing quote/bracket), then space.
_BOUNDARY = re.compile(r"(?<=[.?!])[\"')\]]*\s+")
_ENUM = re.compile(r"^\s*(?:\(?\d{1,2}[.)](?:\s+|(?=[A-Z,]))|[-*\u2022]\s+)")
_ENUM_ONLY = re.compile(r"^\s*\(?\d{1,2}[.)]?\s*$")
_HEADING = re.compile(r"^\s*[A-Z][A-Z /&-]{2,40}:\s*")
_LAST_WORD = re.compile(r"([A-Za-z][A-Za-z.]*)\.[\"')\]]*$")


def _is_abbreviation(left: str, right: str) -> bool:
    """True when the full stop at the end of ``left`` belongs to an abbreviation."""
    m = _LAST_WORD.search(left)
    if not m:
        return False
    word = m.group(1).lower()
    if word in _NUMBER_ABBREV:
        return bool(re.match(r"\d", right))
    if word in _SOFT_ABBREVIATIONS:
        return not right[:1].isupper()
    if word in ABBREVIATIONS:
        return True
    # Single initials such as "J. Smith" (but not "x." which ends "... x-XXXX.").
    return len(word) == 1 and word not in {"x"} and right[:1].isupper()


def _join_wrapped_lines(text: str) -> list[str]:
    """Split on blank lines and on line breaks that end a sentence or start a list item."""
    blocks: list[str] = []
    for para in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        current = ""
        for line in para.split("\n"):
            line = line.strip()
            if not line:
                continue
            starts_new = bool(_ENUM.match(line) or _HEADING.match(line))
            if current and (starts_new or re.search(r"[.?!:;]$", current)):
                blocks.append(current)
                current = line
            else:
                current = f"{current} {line}".strip()
        if current:
            blocks.append(current)
    return blocks


def _split_block(block: str) -> list[str]:
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(block):
        left, right = block[start : m.start()], block[m.end() :]
        if not right or _is_abbreviation(left, right):
            continue
        out.append(block[start : m.start()] + m.group(0).strip())
        start = m.end()
    out.append(block[start:])
    return out


def _clean(piece: str) -> str:
    piece = _HEADING.sub("", piece)
    piece = _ENUM.sub("", piece)
    piece = re.sub(r"\s+", " ", piece).strip().lstrip(",;: ")
    piece = re.sub(r"\s+([.?!,;:])", r"\1", piece)  # "normal ." -> "normal."
    piece = re.sub(r"([.?!])\1+$", r"\1", piece)  # "abnormality.." -> "abnormality."
    return piece


_SPACED_HYPHEN = re.compile(r"(?<=\w) - (?=\w)")


def tidy_decoded(text: str) -> str:
    """Decoded WordPiece text with word-internal hyphens closed up: the decoder's cleanup
    attaches ``. , ? !`` but leaves "ill - defined"; this gives "ill-defined"."""
    return _SPACED_HYPHEN.sub("-", text)


def split_sentences(text: str) -> list[str]:
    """Split a report into sentences, keeping their final punctuation.

    Never returns empty strings, bare enumerators (``"2."``) or bare headings. Whitespace is
    collapsed and a space before punctuation is removed; the words are not changed.
    """
    if not text or not text.strip():
        return []
    # "normal . lungs" (tokenised) -> "normal. lungs"; keeps "1.5" and "x-XXXX." intact.
    text = re.sub(r"(\S)[ \t]+([.?!])(?=\s|$)", r"\1\2", text)
    sentences: list[str] = []
    for block in _join_wrapped_lines(text):
        for heading_split in re.split(r"(?<=\S)\s+(?=[A-Z][A-Z ]{2,30}:\s)", block):
            for piece in _split_block(heading_split):
                cleaned = _clean(piece)
                if cleaned and not _ENUM_ONLY.match(cleaned) and re.search(r"\w", cleaned):
                    sentences.append(cleaned)
    return sentences
