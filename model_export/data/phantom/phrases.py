"""Phrase templates of the phantom report writer: positive statements per finding.

Plain vocabulary a rule-based CheXpert labeler recognises; positive statements are never hedged
and never contain a decimal point (the SS-ACL text pipeline splits reports on '.').
"""

from __future__ import annotations

import numpy as np

from model_export.data.phantom.geometry import LUNG_LEAVES
from model_export.data.phantom.types import PhantomFinding

Rng = np.random.Generator
PARENCHYMA = ("Consolidation", "Lung Opacity", "Pneumonia", "Lung Lesion", "Atelectasis", "Edema")
# Node id -> (side, zone kind) for the 14 lung leaves.
_LUNG_LEAF: dict[int, tuple[str, str]] = {
    nid: (side, kind)
    for side, ids in zip(("right", "left"), LUNG_LEAVES, strict=True)
    for nid, kind in zip(
        ids, ("apical", "upper", "mid", "lower", "hilar", "cp", "hemi"), strict=True
    )
}
_ZONE_WORDS = {
    "apical": ("apex", "apical zone"),
    "upper": ("upper lung zone", "upper lobe", "upper lung"),
    "mid": ("mid lung zone", "mid lung"),
    "lower": ("lower lung zone", "lower lobe", "lung base"),
}
_BILATERAL = {  # kind -> (noun phrases, adjective phrases) for both sides
    "apical": (("both apices", "the lung apices"), ("biapical",)),
    "upper": (("both upper lung zones", "the bilateral upper lobes"), ("bilateral upper lobe",)),
    "mid": (("both mid lung zones", "the bilateral mid lungs"), ("bilateral mid lung",)),
    "lower": (
        ("both lung bases", "the bilateral lower lobes"),
        ("bibasilar", "bilateral lower lobe"),
    ),
}
SIZE = {"mild": "small", "moderate": "moderate", "severe": "large"}


def pick(rng: Rng, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def location(f: PhantomFinding, rng: Rng) -> tuple[str, str]:
    """(noun phrase, adjective phrase) for a lung finding: ("the right lower lobe",
    "right lower lobe") or ("both lung bases", "bibasilar")."""
    zones = [_LUNG_LEAF[n] for n in f.node_ids if n in _LUNG_LEAF]
    kinds = list(dict.fromkeys(k for _, k in zones if k in _ZONE_WORDS))
    sides = list(dict.fromkeys(s for s, _ in zones))
    if not kinds:
        return "the lungs", "bilateral"
    if len(sides) == 2 and len(kinds) == 1:
        nouns, adjs = _BILATERAL[kinds[0]]
        return pick(rng, nouns), pick(rng, adjs)
    side = sides[0] if len(sides) == 1 else "bilateral"
    if len(kinds) == 1:
        word = pick(rng, _ZONE_WORDS[kinds[0]])
        return f"the {side} {word}", f"{side} {word}"
    names = " and ".join(kinds)
    return f"the {side} {names} lung zones", f"{side} {names} lung zone"


def lung_sentence(f: PhantomFinding, rng: Rng) -> str:
    loc, adj = location(f, rng)
    if f.label == "Consolidation":
        word = {"mild": "focal", "moderate": "patchy", "severe": "dense"}[f.severity]
        opts = [
            f"There is {word} consolidation in {loc}.",
            f"{cap(adj)} consolidation.",
            f"Focal consolidation is present in {loc}.",
            f"Airspace consolidation in {loc}.",
        ]
    elif f.label == "Lung Opacity":
        word = {"mild": "faint", "moderate": "patchy", "severe": "dense"}[f.severity]
        opts = [
            f"There is a {word} opacity in {loc}.",
            f"{cap(adj)} opacity.",
            f"Ill-defined opacity projects over {loc}.",
            f"{cap(word)} opacities in {loc}.",
        ]
    elif f.label == "Pneumonia":
        opts = [
            f"{cap(adj)} pneumonia.",
            f"There is pneumonia in {loc}.",
            f"Pneumonia is present in {loc}.",
        ]
    elif f.label == "Lung Lesion":
        if f.detail.startswith("mass"):
            n = int(rng.integers(4, 7))
            opts = [
                f"There is a {n} cm mass in {loc}.",
                f"A large mass is seen in {loc}.",
                f"{cap(adj)} mass measuring {n} cm.",
            ]
        else:
            n = int(rng.integers(5, 10)) if f.severity == "mild" else int(rng.integers(10, 20))
            opts = [
                f"There is a {n} mm nodule in {loc}.",
                f"A {n} mm nodule projects over {loc}.",
                f"{cap(adj)} pulmonary nodule measuring {n} mm.",
            ]
    elif f.label == "Atelectasis":
        opts = [
            f"Linear atelectasis in {loc}.",
            f"There is plate-like atelectasis in {loc}.",
            f"{cap(adj)} subsegmental atelectasis.",
            f"{cap(adj)} atelectasis.",
        ]
    else:  # Edema
        sev = f.severity
        opts = [
            f"There is {sev} pulmonary edema.",
            f"{cap(sev)} perihilar pulmonary edema.",
            f"{cap(sev)} pulmonary edema is present.",
            f"Findings of {sev} pulmonary edema.",
        ]
    return pick(rng, opts)


def other_sentence(f: PhantomFinding, rng: Rng) -> str:
    side, size, sev = f.side or "", SIZE[f.severity] if f.severity in SIZE else "", f.severity
    if f.label == "Pleural Effusion":
        if side == "bilateral":
            opts = [
                f"{cap(size)} bilateral pleural effusions.",
                f"There are {size} bilateral pleural effusions.",
            ]
        else:
            opts = [
                f"There is a {size} {side} pleural effusion.",
                f"{cap(size)} {side} pleural effusion with blunting of the {side} "
                "costophrenic angle.",
                f"Blunting of the {side} costophrenic angle due to a {size} pleural effusion.",
            ]
    elif f.label == "Pneumothorax":
        where = "apical " if sev != "severe" else ""
        opts = [
            f"There is a {size} {side} {where}pneumothorax.",
            f"{cap(size)} {side} pneumothorax with a visible pleural line.",
            f"A {size} {side}-sided pneumothorax is present.",
        ]
    elif f.label == "Pleural Other":
        where = "apical " if f.detail == "apical" else ""
        opts = [
            f"{cap(side)} {where}pleural thickening.",
            f"There is {side} {where}pleural thickening.",
        ]
        if not where and side != "bilateral":
            opts.append(f"Pleural thickening along the {side} lateral chest wall.")
    elif f.label == "Cardiomegaly":
        opts = [
            f"The heart is {sev}ly enlarged.",
            f"{cap(sev)} cardiomegaly.",
            f"The cardiac silhouette is {sev}ly enlarged.",
            "There is cardiomegaly.",
        ]
    elif f.label == "Enlarged Cardiomediastinum":
        opts = [
            f"The mediastinum is {sev}ly widened.",
            "The upper mediastinum is widened.",
            f"{cap(sev)} widening of the superior mediastinum.",
            "Mediastinal widening.",
        ]
    elif f.label == "Fracture":
        how = "nondisplaced" if sev == "mild" else "displaced"
        opts = [
            f"There is a {how} fracture of the {side} clavicle.",
            f"{cap(how)} {side} clavicular fracture.",
            f"Acute {how} {side} clavicle fracture.",
        ]
    else:
        opts = _device_options(f)
    return pick(rng, opts)


def _device_options(f: PhantomFinding) -> list[str]:
    kind, _, arg = f.detail.partition(":")
    if kind == "ett":
        return [
            f"Endotracheal tube terminates {arg} cm above the carina.",
            f"An endotracheal tube is in place with the tip {arg} cm above the carina.",
            f"ET tube tip is {arg} cm above the carina.",
        ]
    if kind == "ngt":
        return [
            "Enteric tube courses below the diaphragm with the tip in the stomach.",
            "A nasogastric tube extends into the stomach.",
            "Nasogastric tube tip projects over the stomach.",
        ]
    tip = "at the cavoatrial junction" if arg == "caj" else "in the superior vena cava"
    return [
        f"Right internal jugular central venous catheter terminates {tip}.",
        f"Right internal jugular line with the tip {tip}.",
        f"A right-sided central venous catheter ends {tip}.",
    ]
