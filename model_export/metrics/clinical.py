"""Clinical efficacy (CE) as released: multilabel precision / recall / F1 over CheXpert labels.

Inputs are 0/1 label vectors from the labeler run on generated and on reference reports,
positive-only as in the release (uncertain, negative and blank all count as 0). Micro and macro
averages follow sklearn's ``precision_recall_fscore_support`` with ``zero_division=0``; the
release reports them over the 14 labels (``CE-14_*``) and over 5 labels (``CE-5_*``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from model_export.ssacl.anatomy import CHEXPERT_LABELS

#: The 5-label subset of the release (RGRG's "mic-5"), names as in ``CHEXPERT_LABELS``.
CE5_LABELS: tuple[str, ...] = (
    "Cardiomegaly",
    "Edema",
    "Consolidation",
    "Atelectasis",
    "Pleural Effusion",
)
CE5_INDEX: tuple[int, ...] = tuple(CHEXPERT_LABELS.index(n) for n in CE5_LABELS)


def _as_binary(x: np.ndarray | Sequence[Sequence[int]], name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be (N, L) label vectors, got shape {a.shape}")
    if not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0/1 (map uncertain/negative/blank to 0 first)")
    return a.astype(bool)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (sklearn's zero_division=0)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out: np.ndarray = np.divide(num, den, out=np.zeros_like(num), where=den != 0)
    return out


def precision_recall_f1(
    pred: np.ndarray | Sequence[Sequence[int]],
    true: np.ndarray | Sequence[Sequence[int]],
) -> dict[str, float]:
    """Multilabel P/R/F1, micro and macro, with zero_division=0.

    Args:
        pred: (N, L) 0/1 predictions (labels of generated reports).
        true: (N, L) 0/1 truth (labels of reference reports).

    Returns:
        Keys ``{precision,recall,f1}_{micro,macro}``.
    """
    p, t = _as_binary(pred, "pred"), _as_binary(true, "true")
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and true {t.shape} differ in shape")
    tp = (p & t).sum(0)  # (L,)
    fp = (p & ~t).sum(0)
    fn = (~p & t).sum(0)
    prec_l, rec_l = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
    f1_l = _safe_div(2 * tp, 2 * tp + fp + fn)  # == 2PR/(P+R), 0 when undefined
    tps, fps, fns = tp.sum(), fp.sum(), fn.sum()
    return {
        "precision_micro": float(_safe_div(tps, tps + fps)),
        "recall_micro": float(_safe_div(tps, tps + fns)),
        "f1_micro": float(_safe_div(2 * tps, 2 * tps + fps + fns)),
        "precision_macro": float(prec_l.mean()),
        "recall_macro": float(rec_l.mean()),
        "f1_macro": float(f1_l.mean()),
    }


def ce_scores(
    pred: np.ndarray | Sequence[Sequence[int]],
    true: np.ndarray | Sequence[Sequence[int]],
) -> dict[str, float]:
    """Release-style CE keys from (N, 14) 0/1 vectors in ``CHEXPERT_LABELS`` order.

    Returns:
        ``CE-14_{PRECISION,RECALL,F1}_{MICRO,MACRO}`` and the same with ``CE-5_``.
    """
    p, t = np.asarray(pred), np.asarray(true)
    if p.ndim != 2 or p.shape[1] != len(CHEXPERT_LABELS):
        raise ValueError(f"expected (N, {len(CHEXPERT_LABELS)}) label vectors, got {p.shape}")
    out: dict[str, float] = {}
    for tag, cols in (("CE-14", slice(None)), ("CE-5", list(CE5_INDEX))):
        for key, val in precision_recall_f1(p[:, cols], t[:, cols]).items():
            metric, avg = key.split("_")
            out[f"{tag}_{metric.upper()}_{avg.upper()}"] = val
    return out


def ce_scores_from_reports(
    generated: Sequence[str],
    references: Sequence[str],
    labeler: Callable[[str], Sequence[int]],
) -> dict[str, float]:
    """Label both report lists with ``labeler`` (text -> 14 ints, 1 = positive) and score them."""
    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated reports but {len(references)} references")
    pred = np.array([[1 if v == 1 else 0 for v in labeler(g)] for g in generated]).reshape(
        len(generated), -1
    )
    true = np.array([[1 if v == 1 else 0 for v in labeler(r)] for r in references]).reshape(
        len(references), -1
    )
    return ce_scores(pred, true)
