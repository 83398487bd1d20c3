"""Record types of the phantom generator (re-exported by ``model_export.data.phantom``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_export.ssacl.anatomy import FINDINGS

SEVERITIES = ("mild", "moderate", "severe")
NO_SEVERITY = "n/a"  # severity of a support device
SIDES = ("right", "left", "bilateral")


@dataclass(frozen=True)
class PhantomConfig:
    """Prior over phantom findings and acquisition; every default is a balanced training prior."""

    p_normal: float = 0.26  # probability of an image without any finding (devices aside)
    p_devices_if_normal: float = 0.1  # chance that a normal image still carries support devices
    n_findings: tuple[int, int] = (1, 3)  # inclusive range of distinct finding labels otherwise
    label_weights: tuple[float, ...] = (1.0,) * len(FINDINGS)  # relative prior, FINDINGS order
    p_bilateral: float = 0.2  # chance that a sided parenchymal/pleural finding is bilateral
    max_devices: int = 3  # most devices (ET tube, enteric tube, central line) in one image
    rotation_deg: float = 5.0  # largest in-plane patient rotation, degrees
    scale: tuple[float, float] = (0.9, 1.04)  # patient size relative to the field of view
    noise: tuple[float, float] = (0.004, 0.025)  # range of noise std on [0, 1] grey levels
    blur: tuple[float, float] = (0.4, 1.1)  # range of blur sigma in pixels at 224 px
    p_reorder: float = 0.3  # chance that the report lists normal statements in shuffled order

    def __post_init__(self) -> None:
        if len(self.label_weights) != len(FINDINGS) or min(self.label_weights) < 0:
            raise ValueError(f"label_weights needs {len(FINDINGS)} non-negative weights")
        if sum(self.label_weights) <= 0:
            raise ValueError("label_weights must not all be zero")
        lo, hi = self.n_findings
        if not 1 <= lo <= hi <= len(FINDINGS):
            raise ValueError(f"n_findings must satisfy 1 <= lo <= hi <= 13, got {self.n_findings}")
        for name in ("p_normal", "p_devices_if_normal", "p_bilateral", "p_reorder"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability")
        if not 1 <= self.max_devices <= 3:
            raise ValueError("max_devices must be 1..3")


@dataclass(frozen=True)
class PhantomFinding:
    """One drawn finding: CheXpert label, the deepest anatomy nodes holding it, exact mask."""

    label: str  # CheXpert observation (one of anatomy.FINDINGS)
    node_ids: tuple[int, ...]  # anatomy nodes (ascending) whose masks together contain ``mask``
    side: str | None  # "right" / "left" / "bilateral", None for midline findings
    severity: str  # "mild" / "moderate" / "severe", "n/a" for support devices
    mask: np.ndarray  # (H, W) bool, non-empty, inside the union of the node masks
    detail: str = ""  # sub-kind used by the report: "nodule", "mass", "ett", "ngt", "cvc", ...


@dataclass(frozen=True)
class ReportSentence:
    """One report sentence with the anatomy it talks about.

    ``finding`` is the CheXpert label the sentence asserts or negates, or None for a purely
    normal statement naming no single label ("The lungs are clear.").
    """

    text: str
    node_ids: tuple[int, ...]
    finding: str | None
    positive: bool
    section: str = "findings"  # "findings" or "impression"


@dataclass(frozen=True)
class PhantomSample:
    """A phantom radiograph with exact anatomy masks, its findings and its report."""

    image: np.ndarray  # (H, W) float32 in [0, 1], white = dense
    masks: np.ndarray  # (32, H, W) bool, index = anatomy node id
    findings: tuple[PhantomFinding, ...]
    labels: np.ndarray  # (14,) float32 0/1 in CHEXPERT_LABELS order
    sentences: tuple[ReportSentence, ...]
    findings_text: str
    impression_text: str
    report: str  # findings_text + " " + impression_text
    seed: int
