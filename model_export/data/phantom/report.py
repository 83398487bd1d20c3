"""Phantom report writer: FINDINGS and IMPRESSION text from the drawn findings (pure Python).

Each sentence records the anatomy node ids it is about, the CheXpert label it asserts or
negates (None for a normal statement naming no single label) and its polarity. Phrasing uses
the plain vocabulary a rule-based CheXpert labeler recognises; positive statements are never
hedged ("possible", "concerning for"), and no sentence contains a decimal point, because the
SS-ACL text pipeline splits reports on '.'.
"""

from __future__ import annotations

import numpy as np

from model_export.data.phantom.phrases import (
    PARENCHYMA,
    SIZE,
    cap,
    location,
    lung_sentence,
    other_sentence,
    pick,
)
from model_export.data.phantom.types import PhantomFinding, ReportSentence

Rng = np.random.Generator

_GROUP = {
    **dict.fromkeys(PARENCHYMA, "lungs"),
    **dict.fromkeys(("Pleural Effusion", "Pneumothorax", "Pleural Other"), "pleura"),
    **dict.fromkeys(("Cardiomegaly", "Enlarged Cardiomediastinum"), "heart"),
    "Fracture": "bones",
    "Support Devices": "devices",
}
_IMPRESSION_ORDER = (
    "Pneumothorax", "Pleural Effusion", "Pneumonia", "Consolidation", "Edema", "Cardiomegaly",
    "Enlarged Cardiomediastinum", "Lung Lesion", "Lung Opacity", "Atelectasis", "Fracture",
    "Pleural Other",
)  # fmt: skip


def _neg(text: str, nodes: tuple[int, ...], finding: str | None = None) -> ReportSentence:
    return ReportSentence(text, nodes, finding, False)


def _lung_normals(present: set[str], rng: Rng) -> list[ReportSentence]:
    if not present & set(PARENCHYMA):
        opts = [
            "The lungs are clear.",
            "Lungs are clear.",
            "The lungs are clear bilaterally.",
            "The lungs are well expanded and clear.",
        ]
        out = [_neg(pick(rng, opts), (1,))]
    elif not present & {"Consolidation", "Pneumonia"} and rng.random() < 0.5:
        out = [_neg("No focal consolidation.", (1,), "Consolidation")]
    else:
        out = []
    if "Edema" not in present and present & set(PARENCHYMA) and rng.random() < 0.3:
        out.append(_neg("No pulmonary edema.", (1,), "Edema"))
    return out


def _pleura_normals(present: set[str], rng: Rng) -> list[ReportSentence]:
    eff, ptx = "Pleural Effusion" in present, "Pneumothorax" in present
    if not eff and not ptx:
        opts = [
            "No pleural effusion or pneumothorax.",
            "There is no pleural effusion or pneumothorax.",
            "No pneumothorax or pleural effusion.",
        ]
        return [_neg(pick(rng, opts), (1,))]
    if not eff:
        opts = ["No pleural effusion.", "There is no pleural effusion."]
        return [_neg(pick(rng, opts), (1,), "Pleural Effusion")]
    if not ptx:
        opts = ["No pneumothorax.", "There is no pneumothorax."]
        return [_neg(pick(rng, opts), (1,), "Pneumothorax")]
    return []


def _heart_normals(present: set[str], rng: Rng) -> list[ReportSentence]:
    cm, ecm = "Cardiomegaly" in present, "Enlarged Cardiomediastinum" in present
    mediastinum = _neg("The mediastinal contours are normal.", (22,), "Enlarged Cardiomediastinum")
    if not cm and not ecm:
        k = int(rng.integers(4))
        if k == 0:
            return [_neg("Heart size is normal.", (25,), "Cardiomegaly"), mediastinum]
        opts = [
            "The cardiomediastinal silhouette is normal.",
            "Normal heart size and mediastinal contours.",
            "The heart size and mediastinal contours are within normal limits.",
        ]
        return [_neg(opts[k - 1], (2,))]
    if not cm:
        opts = ["The heart size is normal.", "Heart size is within normal limits."]
        return [_neg(pick(rng, opts), (25,), "Cardiomegaly")]
    if not ecm and rng.random() < 0.5:
        return [mediastinum]
    return []


def _bone_normals(present: set[str], rng: Rng) -> list[ReportSentence]:
    if "Fracture" in present or rng.random() >= 0.75:
        return []
    k = int(rng.integers(4))
    opts = [
        "No acute osseous abnormality.",
        "The osseous structures are intact.",
        "Visualized osseous structures are unremarkable.",
    ]
    return [
        _neg("No displaced fracture is seen.", (3,), "Fracture") if k == 3 else _neg(opts[k], (3,))
    ]


def _normal_statements(present: set[str], rng: Rng) -> dict[str, list[ReportSentence]]:
    """Negative statements for the structures without findings, per report group (the random
    draws happen in this order: lungs, pleura, heart, bones)."""
    return {
        "lungs": _lung_normals(present, rng),
        "pleura": _pleura_normals(present, rng),
        "heart": _heart_normals(present, rng),
        "bones": _bone_normals(present, rng),
    }


def _positive(f: PhantomFinding, rng: Rng) -> ReportSentence:
    make = lung_sentence if f.label in PARENCHYMA else other_sentence
    return ReportSentence(make(f, rng), f.node_ids, f.label, True)


def _impression_text(f: PhantomFinding, rng: Rng) -> str:
    loc, adj = location(f, rng) if f.label in PARENCHYMA else ("", "")
    side, size = f.side or "", SIZE.get(f.severity, "")
    short = {
        "Consolidation": [f"{cap(adj)} consolidation.", f"Consolidation in {loc}."],
        "Lung Opacity": [f"{cap(adj)} opacity.", f"Opacity in {loc}."],
        "Pneumonia": [f"{cap(adj)} pneumonia.", f"Pneumonia in {loc}."],
        "Lung Lesion": [f"{cap(adj)} {'mass' if f.detail.startswith('mass') else 'nodule'}."],
        "Atelectasis": [f"{cap(adj)} atelectasis."],
        "Edema": [f"{cap(f.severity)} pulmonary edema.", "Pulmonary edema."],
        "Pleural Effusion": [f"{cap(size)} {side} pleural effusion{'s' * (side == 'bilateral')}."],
        "Pneumothorax": [f"{cap(size)} {side} pneumothorax."],
        "Pleural Other": [f"{cap(side)} pleural thickening."],
        "Cardiomegaly": ["Cardiomegaly.", f"{cap(f.severity)} cardiomegaly."],
        "Enlarged Cardiomediastinum": ["Widened mediastinum.", "Mediastinal widening."],
        "Fracture": [f"{cap(side)} clavicle fracture.", f"Fracture of the {side} clavicle."],
    }[f.label]
    return pick(rng, short)


def _impression(findings: list[PhantomFinding], rng: Rng) -> list[ReportSentence]:
    devices = [f for f in findings if f.label == "Support Devices"]
    sick = sorted(
        (f for f in findings if f.label != "Support Devices"),
        key=lambda f: _IMPRESSION_ORDER.index(f.label),
    )
    out = [
        ReportSentence(_impression_text(f, rng), f.node_ids, f.label, True, "impression")
        for f in sick
    ]
    if devices and (not sick or rng.random() < 0.3):
        nodes = tuple(sorted({n for f in devices for n in f.node_ids}))
        text = pick(
            rng, ["Support devices in standard position.", "Lines and tubes in standard position."]
        )
        out.append(ReportSentence(text, nodes, "Support Devices", True, "impression"))
    if not sick:
        opts = [
            "No acute cardiopulmonary process.",
            "No acute cardiopulmonary abnormality.",
            "No acute intrathoracic process.",
        ] + ([] if devices else ["Normal chest radiograph."])
        out.append(ReportSentence(pick(rng, opts), (0,), None, False, "impression"))
    return out


def write_report(
    findings: list[PhantomFinding] | tuple[PhantomFinding, ...], rng: Rng, p_reorder: float = 0.3
) -> tuple[tuple[ReportSentence, ...], str, str]:
    """(sentences of both sections, FINDINGS text, IMPRESSION text) for one phantom."""
    findings = list(findings)
    groups = _normal_statements({f.label for f in findings}, rng)
    groups["devices"] = []
    for f in findings:  # positives lead their group
        g = groups[_GROUP[f.label]]
        g.insert(sum(s.positive for s in g), _positive(f, rng))
    order = (
        ["lungs", "pleura", "heart", "bones"]
        if rng.random() < 0.6
        else ["heart", "lungs", "pleura", "bones"]
    )
    if rng.random() < p_reorder:
        order = [order[i] for i in rng.permutation(4)]
    order = ["devices", *order] if rng.random() < 0.7 else [*order, "devices"]
    body = [s for name in order for s in groups[name]]
    impression = _impression(findings, rng)
    text = " ".join(s.text for s in body)
    return tuple(body + impression), text, " ".join(s.text for s in impression)
