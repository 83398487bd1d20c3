"""Rule-based CheXpert-14 report labeler (pure Python, no torch).

Per sentence: find mention phrases of the 13 findings (``patterns.MENTIONS``) and attribute
statements ("the heart is enlarged", "heart size is normal"), split the sentence into clauses
(negation and uncertainty never cross "but", "however", ";", ", there ..."), and give each
mention the state of its nearest cue: a negation cue before it ("no effusion or pneumothorax"
negates both) or after it ("... is not seen"), an uncertainty cue before ("possible ...") or
after ("... cannot be excluded"). Uncertainty beats negation when both apply.

Aggregation follows CheXpert: positive beats uncertain beats negative beats blank, over the
mentions of a sentence and over the sentences of a report; "No Finding" is positive only when
no finding other than Support Devices is positive or uncertain.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

from model_export.ssacl.anatomy import CHEXPERT_LABELS, FINDINGS
from model_export.ssacl.text import patterns as P
from model_export.ssacl.text.sentences import split_sentences

NO_FINDING = CHEXPERT_LABELS[0]
SUPPORT_DEVICES = "Support Devices"


class LabelState(Enum):
    """CheXpert label states; ``value`` is the CheXpert code (1 / 0 / -1 / None)."""

    POSITIVE = 1
    NEGATIVE = 0
    UNCERTAIN = -1
    BLANK = None

    @property
    def code(self) -> int | None:
        """CheXpert numeric code: 1 positive, 0 negative, -1 uncertain, None blank."""
        code: int | None = self.value
        return code

    @property
    def rank(self) -> int:
        """Aggregation priority: positive > uncertain > negative > blank."""
        return {None: 0, 0: 1, -1: 2, 1: 3}[self.value]


Labels = dict[str, LabelState]


@dataclass(frozen=True)
class _Cue:
    start: int
    end: int
    kind: str  # "neg" or "unc"
    reach: int = 5  # post cues: most words allowed between the mention and the cue


Attribute = tuple[str, re.Pattern[str], re.Pattern[str], re.Pattern[str]]


def _rx(parts: tuple[str, ...] | str, bounded: bool = False) -> re.Pattern[str]:
    alternatives = (parts,) if isinstance(parts, str) else parts
    body = "|".join(f"(?:{p})" for p in alternatives)
    return re.compile(rf"\b(?:{body})\b" if bounded else body)


@dataclass(frozen=True)
class _Rules:
    """The compiled phrase tables of ``patterns``."""

    mentions: dict[str, re.Pattern[str]]
    unmentions: dict[str, re.Pattern[str]]
    attributes: tuple[Attribute, ...]
    pre_neg: re.Pattern[str]
    post_neg: re.Pattern[str]
    pre_unc: re.Pattern[str]
    post_unc: re.Pattern[str]
    near_post_unc: re.Pattern[str]
    clause: re.Pattern[str]
    normal: re.Pattern[str]


@lru_cache(maxsize=1)
def _rules() -> _Rules:
    return _Rules(
        mentions={k: re.compile(rf"\b(?:{'|'.join(v)})") for k, v in P.MENTIONS.items()},
        unmentions={k: _rx(v) for k, v in P.UNMENTIONS.items()},
        attributes=tuple(
            (lab, _rx(a, True), _rx(p, True), _rx(n, True)) for lab, a, p, n in P.ATTRIBUTES
        ),
        pre_neg=_rx(P.PRE_NEGATION),
        post_neg=_rx(P.POST_NEGATION, True),
        pre_unc=_rx(P.PRE_UNCERTAINTY),
        post_unc=_rx(P.POST_UNCERTAINTY),
        near_post_unc=_rx(P.NEAR_POST_UNCERTAINTY),
        clause=_rx(P.CLAUSE_BREAK),
        normal=_rx(P.NORMAL_STATEMENTS),
    )


def _normalise(sentence: str) -> str:
    """Lower case with single spaces (all spans index this string)."""
    return " ".join(sentence.lower().split())


def _clauses(text: str) -> list[tuple[int, int]]:
    """Character spans of the clauses of ``text``."""
    cuts = [0]
    for m in _rules().clause.finditer(text):
        cuts.extend((m.start(), m.end()))
    cuts.append(len(text))
    return [(cuts[i], cuts[i + 1]) for i in range(0, len(cuts), 2) if cuts[i] < cuts[i + 1]]


def _overlaps(a: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(a[0] < e and s < a[1] for s, e in spans)


Cues = tuple[list[_Cue], list[_Cue]]


def _find_cues(text: str) -> Cues:
    """Pre cues (apply to later mentions) and post cues (apply to earlier mentions).

    Negation cues inside an uncertainty cue ("not" in "cannot be excluded") are dropped.
    """
    r = _rules()
    pre_unc = [_Cue(*m.span(), "unc") for m in r.pre_unc.finditer(text)]
    post_unc = [_Cue(*m.span(), "unc") for m in r.post_unc.finditer(text)]
    post_unc += [_Cue(*m.span(), "unc", reach=2) for m in r.near_post_unc.finditer(text)]
    taken = [(q.start, q.end) for q in pre_unc + post_unc]
    post_neg = [
        _Cue(*m.span(), "neg")
        for m in r.post_neg.finditer(text)
        if m.end() > m.start() and not _overlaps(m.span(), taken)
    ]
    pre_neg = [
        _Cue(*m.span(), "neg") for m in r.pre_neg.finditer(text) if not _overlaps(m.span(), taken)
    ]
    by_start = sorted(pre_unc + pre_neg, key=lambda q: q.start)
    return by_start, sorted(post_unc + post_neg, key=lambda q: q.start)


_GAP_VERB = re.compile(
    r",|\b(?:is|are|was|were|there|seen|noted|present|identified|with|has|have)\b"
)


def _clean_gap(gap: str, max_words: int) -> bool:
    """A post cue reaches back over at most ``max_words`` words, no comma and no verb."""
    return len(gap.split()) <= max_words and not _GAP_VERB.search(gap)


def _state_at(text: str, span: tuple[int, int], clause: tuple[int, int], cues: Cues) -> LabelState:
    """State of a mention at ``span`` from the nearest cues inside its clause."""
    pre_cues, post_cues = cues
    pre = [q for q in pre_cues if clause[0] <= q.start and q.end <= span[0]]
    post = [
        q
        for q in post_cues
        if span[1] <= q.start
        and q.end <= clause[1]
        and _clean_gap(text[span[1] : q.start], q.reach)
    ]
    kinds = {pre[-1].kind} if pre else set()
    kinds |= {post[0].kind} if post else set()
    if "unc" in kinds:
        return LabelState.UNCERTAIN
    if "neg" in kinds:
        return LabelState.NEGATIVE
    return LabelState.POSITIVE


def _clause_of(span: tuple[int, int], clauses: list[tuple[int, int]]) -> tuple[int, int]:
    for c in clauses:
        if c[0] <= span[0] < c[1]:
            return c
    return (0, span[1])


States = dict[str, list[LabelState]]


def _mention_states(text: str, clauses: list[tuple[int, int]], cues: Cues) -> States:
    """States of every mention phrase, grouped by observation."""
    r = _rules()
    out: States = {}
    for label, rx in r.mentions.items():
        unmention = r.unmentions.get(label)
        blocked = [m.span() for m in unmention.finditer(text)] if unmention else []
        for m in rx.finditer(text):
            if not _overlaps(m.span(), blocked):
                state = _state_at(text, m.span(), _clause_of(m.span(), clauses), cues)
                out.setdefault(label, []).append(state)
    return out


_PHRASE_BREAK = re.compile(r".*(?:[,:]|\b(?:and|or|with|is|are|was|were)\b)")


def _adjacent_start(text: str, lo: int, start: int, max_words: int = 3) -> int:
    """Start of the (at most ``max_words``) words before ``start`` in the same phrase."""
    before = text[lo:start]
    cut = _PHRASE_BREAK.match(before)
    if cut:
        before = before[cut.end() :]
    words = before.split()[-max_words:]
    return start - len(" ".join(words)) - 1 if words else start


def _nearest_predicate(
    text: str, anatomy: re.Match[str], rule: Attribute, window: tuple[int, int]
) -> tuple[re.Match[str], bool] | None:
    """The predicate closest to the anatomy phrase and whether it is a positive one."""
    _, _, pos, neg = rule
    preds = [(m, True) for m in pos.finditer(text, *window)]
    preds += [(m, False) for m in neg.finditer(text, *window)]
    preds = [(m, p) for m, p in preds if not _overlaps(m.span(), [anatomy.span()])]
    if not preds:
        return None

    def distance(mp: tuple[re.Match[str], bool]) -> int:
        m = mp[0]
        return min(abs(m.start() - anatomy.end()), abs(anatomy.start() - m.end()))

    return min(preds, key=distance)


def _attribute_states(text: str, clauses: list[tuple[int, int]], cues: Cues) -> States:
    """States from "anatomy + predicate" statements ("heart size is normal").

    The nearest predicate in the clause decides, looking after the anatomy phrase and at most
    3 words before it ("enlarged heart"); "borderline" makes it uncertain.
    """
    out: States = {}
    for rule in _rules().attributes:
        for a in rule[1].finditer(text):
            clause = _clause_of(a.span(), clauses)
            window = (_adjacent_start(text, clause[0], a.start()), clause[1])
            found = _nearest_predicate(text, a, rule, window)
            if found is None:
                continue
            m, positive = found
            if not positive:
                state = LabelState.NEGATIVE
            elif m.group(0).startswith("borderline"):
                state = LabelState.UNCERTAIN
            else:
                state = _state_at(text, m.span(), clause, cues)
            out.setdefault(rule[0], []).append(state)
    return out


def _best(states: list[LabelState]) -> LabelState:
    return max(states, key=lambda s: s.rank, default=LabelState.BLANK)


def _no_finding(labels: Labels) -> LabelState:
    asserted = (LabelState.POSITIVE, LabelState.UNCERTAIN)
    if any(labels[f] in asserted for f in FINDINGS if f != SUPPORT_DEVICES):
        return LabelState.BLANK
    return LabelState.POSITIVE


def label_sentence(sentence: str) -> Labels:
    """Labels of one sentence: 14 CheXpert names -> state.

    "No Finding" is positive for an explicit normal statement ("no acute cardiopulmonary
    abnormality") that asserts no finding other than Support Devices, blank otherwise.
    Reports repeat their sentences, so results are cached by text (a fresh dict each call).
    """
    return dict(_label_sentence(sentence))


@lru_cache(maxsize=4096)
def _label_sentence(sentence: str) -> Labels:
    """:func:`label_sentence`, uncached (callers must not mutate the returned dict)."""
    text = _normalise(sentence)
    clauses = _clauses(text)
    cues = _find_cues(text)
    found = _mention_states(text, clauses, cues)
    for label, states in _attribute_states(text, clauses, cues).items():
        found.setdefault(label, []).extend(states)
    labels: Labels = {name: _best(found.get(name, [])) for name in CHEXPERT_LABELS}
    normal = _rules().normal.search(text)
    labels[NO_FINDING] = _no_finding(labels) if normal else LabelState.BLANK
    return labels


def aggregate(per_sentence: list[Labels]) -> Labels:
    """Report labels from sentence labels (CheXpert aggregation and No Finding rule)."""
    labels: Labels = {name: _best([s[name] for s in per_sentence]) for name in CHEXPERT_LABELS}
    labels[NO_FINDING] = _no_finding(labels) if per_sentence else LabelState.BLANK
    return labels


def label_report(text: str) -> Labels:
    """Labels of a whole report (split into sentences first). Empty text: all blank."""
    return aggregate([label_sentence(s) for s in split_sentences(text)])


def positive_vector(text: str) -> list[int]:
    """14 ints in ``CHEXPERT_LABELS`` order: 1 where the report is positive, else 0."""
    labels = label_report(text)
    return [int(labels[name] is LabelState.POSITIVE) for name in CHEXPERT_LABELS]
