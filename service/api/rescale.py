"""Boxes from the working resolution back to pixels of the original image.

The decoder downscales large images once (``CXR_WORKING_MAX_SIDE``) and the engine computes
boxes in the pixels of the array it is given; the API reports boxes in pixels of the original
image, so they are scaled back here: edges outward (floor / ceil), clipped to the image.
"""

from __future__ import annotations

import math
from dataclasses import replace

from service.imaging.types import DecodedImage
from service.inference.types import Box, Grounding, Report


def scale_box(box: Box, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> Box:
    """``(x0, y0, x1, y1)`` in a ``from_hw`` (H, W) image -> the same region in ``to_hw``."""
    if from_hw == to_hw:
        return box
    fy, fx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    x0, y0, x1, y1 = box
    return (
        max(0, math.floor(x0 * fx)),
        max(0, math.floor(y0 * fy)),
        min(to_hw[1], math.ceil(x1 * fx)),
        min(to_hw[0], math.ceil(y1 * fy)),
    )


def _hw(img: DecodedImage) -> tuple[tuple[int, int], tuple[int, int]]:
    """(working (H, W), original (H, W)) of a decoded image."""
    return (int(img.pixels.shape[0]), int(img.pixels.shape[1])), (img.height, img.width)


def report_in_original(report: Report, img: DecodedImage) -> Report:
    """The report with every sentence box in original-image pixels."""
    work, orig = _hw(img)
    if work == orig:
        return report
    sentences = tuple(replace(s, box=scale_box(s.box, work, orig)) for s in report.sentences)
    return replace(report, sentences=sentences)


def groundings_in_original(groundings: list[Grounding], img: DecodedImage) -> list[Grounding]:
    """The groundings with their boxes in original-image pixels."""
    work, orig = _hw(img)
    if work == orig:
        return groundings
    return [replace(g, box=scale_box(g.box, work, orig)) for g in groundings]
