"""Typed results of the inference engine (the contract between engine and API).

Coordinates are pixels of the *original* image: ``box = (x0, y0, x1, y1)``, x to the right,
y down, end-exclusive. Heatmaps are float32 arrays in [0, 1] of shape (H, W).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class GenerateOptions:
    """Decoding and output options for one engine call."""

    beam_size: int = 1  # 1 = greedy; the release uses 3
    max_new_tokens: int = 100  # report length cap, in decoder tokens
    heatmaps: bool = True  # compute per-sentence heatmaps (boxes are always computed)
    heatmap_size: tuple[int, int] | None = None  # (H, W); None = each image's own size
    # decoding overrides; None = the manifest's defaults (``decoder`` section)
    min_new_tokens: int | None = None  # [EOS] forbidden before this many tokens
    repetition_penalty: float | None = None  # > 1 discourages repeated tokens (release 2.0)
    length_penalty: float | None = None  # beam score = sum log p / length ** this (release 2.0)


@dataclass(frozen=True)
class SentenceGrounding:
    """One generated sentence and the anatomy that supports it."""

    text: str
    node_ids: tuple[int, ...]  # anatomy graph node ids, deepest first
    confidence: float  # in [0, 1]
    box: Box
    heatmap: np.ndarray | None  # (H, W) float32 in [0, 1], None when heatmaps are off


@dataclass(frozen=True)
class Report:
    """A generated report for one image."""

    text: str
    findings: str | None
    impression: str | None
    entity_probs: dict[str, float]  # the 14 CheXpert labels -> probability
    entities: tuple[str, ...]  # predicted pathology entities (the decoder's prompt)
    candidates: tuple[str, ...]  # anatomy candidates (level-2 roots) from the entities
    sentences: tuple[SentenceGrounding, ...]
    num_tokens: int
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds
    grounding_method: str = "anatomy-pooling"  # what made the sentence maps (manifest)
    dropped: dict[str, int] = field(default_factory=dict)  # sentences removed, by reason


@dataclass(frozen=True)
class Grounding:
    """Heatmap and best anatomy for one free-text phrase on one image."""

    phrase: str
    node_id: int
    score: float  # cosine similarity of phrase and best anatomy, in [-1, 1]
    box: Box
    heatmap: np.ndarray  # (H, W) float32 in [0, 1]
    method: str = "anatomy-map"  # what made the map (service.inference.grounding)
    confidence: float = 0.0  # map quality of the named anatomy, in [0, 1]


class Engine(Protocol):
    """What the API needs from an engine (the ORT engine, or a fake in route tests)."""

    @property
    def model_facts(self) -> dict[str, object]:
        """Manifest facts for GET /v1/model: name, version, sha256, input size, labels..."""
        ...

    @property
    def provider(self) -> str:
        """The ONNX Runtime execution provider in use, e.g. 'CPUExecutionProvider'."""
        ...

    @property
    def anatomy_graph(self) -> dict[str, object]:
        """The anatomy graph the weights were trained with (the manifest's, verified)."""
        ...

    def generate(self, images: list[np.ndarray], options: GenerateOptions) -> list[Report]:
        """Reports for a batch of (H, W) float32 images in [0, 1], one per image."""
        ...

    def ground(
        self, image: np.ndarray, phrases: list[str], heatmap_hw: tuple[int, int] | None = None
    ) -> list[Grounding]:
        """One grounding per phrase for one (H, W) float32 image in [0, 1]; heatmaps at
        ``heatmap_hw`` (H, W), or the image's size when None. Boxes are in image pixels."""
        ...
