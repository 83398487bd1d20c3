"""Coherent decoding: drop repeated, self-contradicting and garbled sentences of a report.

Every sentence is reduced to *facts* with the rule-based labeler and anatomy parser: one
``(finding, state, anatomy nodes)`` per CheXpert label the sentence states (state 1 positive,
0 negative, -1 uncertain). Sentences are judged in order against the sentences kept so far,
first matching reason wins:

* ``garbled``: a word loop ("the the the", "right lower lobe right lower lobe").
* ``repeated``: same normalised text as a kept sentence, or every fact already stated with the
  same finding and state at related anatomy (equal, ancestor or descendant node); a fact
  (not a device) of a sentence naming no anatomy, no side and nothing bilateral ("pleural
  effusion.") is covered by any earlier statement of that finding and state. A sentence with
  no facts repeats only by its text.
* ``contradicts_entities``: a finding of ``positives`` stated negative; "No Finding" ("no acute
  cardiopulmonary process") when ``positives`` holds an acute finding (``ACUTE``); with
  ``drop_unpredicted_positive``, a finding outside ``positives`` stated positive.
* ``contradicts_report``: a finding stated 1 after 0 (or 0 after 1) at related anatomy ("normal
  heart size" then "cardiomegaly"; "no left effusion" then "right effusion" is fine); a finding
  stated bilaterally after a one-sided statement of it, or stated at one side after a
  statement of it at the other side, neither saying bilateral (the issue's rule: a report that
  means both sides says "bilateral"; the first statement is kept); "No Finding" against a
  positive acute finding, either order.

Choices: uncertain statements never contradict. Support Devices is multi-instance ("ET tube
in place. No central line."): its facts sit at the named device's node (ET tube -> trachea,
central line -> SVC, "lines and tubes" -> mediastinum), so only statements about the same
device (or all devices) repeat or contradict each other; its negation never contradicts
``positives`` (one bit for every device) but ``drop_unpredicted_positive`` applies, and the
bilateral rule does not. "No Finding" is
never a model entity, so it is only checked against the acute findings: chronic findings
(cardiomegaly, atelectasis, devices, fracture) often accompany "no acute process".
A dropped sentence mixing facts ("no effusion or pneumothorax") loses all of them.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from model_export.ssacl import anatomy
from model_export.ssacl.text import label_sentence, named_anatomy, sentence_anatomy

NO_FINDING = "No Finding"
SUPPORT_DEVICES = "Support Devices"
#: Findings that a "no acute process" statement denies.
ACUTE: frozenset[str] = frozenset(
    {"Edema", "Consolidation", "Pneumonia", "Pneumothorax", "Pleural Effusion"}
)
REASONS: tuple[str, ...] = ("garbled", "repeated", "contradicts_entities", "contradicts_report")

_NON_WORD = re.compile(r"[^a-z0-9]+")
_LOOP = re.compile(r"\b(\w+(?: \w+){0,3})(?: \1\b){2,}|\b(\w+(?: \w+){2,5}) \2\b")
_BILATERAL = re.compile(
    r"\b(?:bilateral\w*|both|bi(?:basilar|basal|apical)\w*)\b|\b(?:right|left) and (?:right|left)\b"
)


@dataclass(frozen=True)
class Fact:
    """One stated finding: CheXpert code, anatomy nodes, and how the sentence localises it."""

    finding: str
    code: int
    nodes: tuple[int, ...]
    generic: bool  # not a device; the sentence names no anatomy, no side, nothing bilateral
    bilateral: bool  # the sentence says bilateral / both / bibasilar ...


def normalise(sentence: str) -> str:
    """Lower case, punctuation and whitespace collapsed to single spaces."""
    return _NON_WORD.sub(" ", sentence.lower()).strip()


def sentence_facts(sentence: str) -> tuple[Fact, ...]:
    """The facts a sentence states (blank labels skipped), in CheXpert label order."""
    low = sentence.lower()
    bilateral = bool(_BILATERAL.search(low))
    sided = bilateral or re.search(r"\b(?:right|left)\b", low)
    unlocalised = not sided and not named_anatomy(sentence)
    out = []
    for finding, state in label_sentence(sentence).items():
        if state.code is None:
            continue
        nodes = () if finding == NO_FINDING else sentence_anatomy(sentence, [finding])
        generic = unlocalised and finding != SUPPORT_DEVICES  # devices: their own node
        out.append(Fact(finding, state.code, nodes, generic, bilateral))
    return tuple(out)


def _related(a: Sequence[int], b: Sequence[int]) -> bool:
    """True when some node of ``a`` equals, contains or lies inside some node of ``b``
    (an empty side is related to everything)."""
    if not a or not b:
        return True
    return any(
        x == y or x in anatomy.ancestors(y) or y in anatomy.ancestors(x) for x in a for y in b
    )


def _sides(nodes: Sequence[int]) -> set[str]:
    return {anatomy.NODE_NAMES[n].split()[0] for n in nodes} & {"right", "left"}


def _covered(fact: Fact, history: Sequence[Fact]) -> bool:
    """True when earlier facts already state this finding and state at this anatomy."""
    same = [h for h in history if h.finding == fact.finding and h.code == fact.code]
    if not same:
        return False
    if fact.generic:
        return True
    return all(any(_related((n,), h.nodes) for h in same) for n in fact.nodes)


def _conflicts(fact: Fact, earlier: Fact) -> bool:
    """True when ``fact`` contradicts an ``earlier`` fact (see the module docstring)."""
    if NO_FINDING in (fact.finding, earlier.finding):
        nf, other = (fact, earlier) if fact.finding == NO_FINDING else (earlier, fact)
        return nf.code == 1 and other.code == 1 and other.finding in ACUTE
    if fact.finding != earlier.finding:
        return False
    if {fact.code, earlier.code} == {0, 1}:
        return _related(fact.nodes, earlier.nodes)
    if fact.finding == SUPPORT_DEVICES or not fact.code == earlier.code == 1:
        return False
    side, earlier_side = _sides(fact.nodes), _sides(earlier.nodes)
    if earlier.bilateral or len(earlier_side) != 1:
        return False
    return fact.bilateral or (len(side) == 1 and side != earlier_side)


def _against_entities(
    facts: Sequence[Fact], positives: Collection[str], drop_unpredicted_positive: bool
) -> bool:
    """True when the sentence contradicts the entity head's predicted findings."""
    for f in facts:
        if f.finding == NO_FINDING:
            if f.code == 1 and any(p in ACUTE for p in positives):
                return True
        elif f.code == 0 and f.finding in positives and f.finding != SUPPORT_DEVICES:
            return True
        elif f.code == 1 and drop_unpredicted_positive and f.finding not in positives:
            return True
    return False


@dataclass
class _History:
    """Normalised texts and facts of the sentences judged against."""

    texts: set[str]
    facts: list[Fact]

    def add(self, text: str, facts: Sequence[Fact]) -> None:
        self.texts.add(text)
        self.facts.extend(facts)


def _verdict(
    sentence: str,
    history: _History,
    positives: Collection[str] | None,
    drop_unpredicted_positive: bool = False,
) -> tuple[str | None, str, tuple[Fact, ...]]:
    """(reason to drop or None, normalised text, facts) of one sentence given the history."""
    text = normalise(sentence)
    facts = sentence_facts(sentence)
    if _LOOP.search(text):
        return "garbled", text, facts
    if text in history.texts or (facts and all(_covered(f, history.facts) for f in facts)):
        return "repeated", text, facts
    if positives is not None and _against_entities(facts, positives, drop_unpredicted_positive):
        return "contradicts_entities", text, facts
    if any(_conflicts(f, h) for f in facts for h in history.facts):
        return "contradicts_report", text, facts
    return None, text, facts


def coherent_sentences(
    sentences: Sequence[str],
    positives: Collection[str],
    *,
    drop_unpredicted_positive: bool = False,
) -> tuple[list[int], dict[str, int]]:
    """Indices of the sentences to keep (in order) and drop counts by reason (``REASONS``).

    ``positives``: the entity head's predicted CheXpert findings. Sentences are judged against
    the kept ones only; when every sentence would be dropped the first is kept.
    """
    history = _History(set(), [])
    keep: list[int] = []
    reasons: dict[int, str] = {}
    for i, s in enumerate(sentences):
        reason, text, facts = _verdict(s, history, positives, drop_unpredicted_positive)
        if reason is None:
            keep.append(i)
            history.add(text, facts)
        else:
            reasons[i] = reason
    if not keep and sentences:
        keep, reasons = [0], {i: r for i, r in reasons.items() if i}
    counts = dict.fromkeys(REASONS, 0)
    for r in reasons.values():
        counts[r] += 1
    return keep, counts


def repetition_contradiction_counts(sentences: Sequence[str]) -> dict[str, int]:
    """Counts of garbled, repeated and self-contradicting sentences in a report, each judged
    against ALL earlier sentences (nothing is dropped; no entity check). Keys: ``garbled``,
    ``repeated``, ``contradicts_report`` and ``sentences`` (the total)."""
    history = _History(set(), [])
    counts = {"garbled": 0, "repeated": 0, "contradicts_report": 0}
    for s in sentences:
        reason, text, facts = _verdict(s, history, None)
        if reason is not None:
            counts[reason] += 1
        history.add(text, facts)
    return counts | {"sentences": len(sentences)}


def kept_text(text: str, sentences: Sequence[str], keep: Sequence[int]) -> str:
    """``text`` without the sentences not in ``keep`` (cut out of the original text, so
    section headings stay); joins the kept sentences when one cannot be found verbatim."""
    wanted = set(keep)
    if wanted >= set(range(len(sentences))):
        return text
    pieces: list[str] = []
    pos = 0
    for i, s in enumerate(sentences):
        start = text.find(s, pos)
        if start < 0:
            return " ".join(sentences[k] for k in keep)
        if i in wanted:
            pieces.append(text[pos : start + len(s)])
        else:
            pieces.append(text[pos:start])
        pos = start + len(s)
    pieces.append(text[pos:])
    return " ".join("".join(pieces).split())
