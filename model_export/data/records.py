"""Record types shared by every dataset reader (pure Python)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class DataFormatError(ValueError):
    """A dataset file is missing or malformed. The message always names the file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class Study:
    """One imaging study with its report.

    ``report`` is FINDINGS followed by IMPRESSION (either may be empty). ``labels`` maps
    CheXpert names to +1 positive / 0 negative / -1 uncertain when the source provides them;
    ``tags`` holds source tags (IU MeSH ``major`` terms, or a folder label).
    """

    study_id: str
    image_paths: tuple[Path, ...]
    report: str = ""
    findings: str = ""
    impression: str = ""
    split: str | None = None  # "train" / "val" / "test" where the source defines one
    source: str = ""  # "mimic-cxr", "iu-xray", "iu-xml", "folder", "phantom"
    labels: dict[str, int] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class TrainSample:
    """One training example from any source, before tokenisation and collation.

    ``labels`` has 14 entries in ``anatomy.CHEXPERT_LABELS`` order (1 positive, 0 otherwise);
    ``label_mask`` is 1 where the label is known (folder images know only their mapped labels,
    report sources know all 14 through the rule-based labeler). ``report`` is None for images
    without a report (plain image folders): they feed only L_ir, L_ar, L_ac (no soft term)
    and the entity head.
    """

    image: object  # np.ndarray (S, S) float32 in [0, 1], already resized to the model size
    report: str | None
    labels: tuple[float, ...]
    label_mask: tuple[float, ...]
    source: str
    sample_id: str
    masks: object | None = None  # np.ndarray (32, S, S) bool node masks (phantoms only)
    finding_masks: object | None = None  # np.ndarray (14, S, S) bool, CheXpert order (phantoms)
