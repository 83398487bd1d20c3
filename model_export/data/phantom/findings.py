"""Phantom findings: draw the planned CheXpert findings into the image (numpy).

See ``plan`` for how findings are drawn from the prior, ``lesions`` for the
lung and pleural findings and ``devices`` for tubes, lines and the clavicle fracture.
"""

from __future__ import annotations

import numpy as np

from model_export.data.phantom import devices as dev
from model_export.data.phantom import lesions as les
from model_export.data.phantom.geometry import Frame, Geometry
from model_export.data.phantom.plan import (
    Canvas,
    FindingPlan,
    Rng,
    anatomy_changes,
    plan_findings,
)
from model_export.data.phantom.types import PhantomFinding

__all__ = ["Canvas", "FindingPlan", "anatomy_changes", "plan_findings", "realize_findings"]


def realize_findings(
    plans: list[FindingPlan], g: Geometry, f: Frame, masks: np.ndarray, rng: Rng, c: Canvas
) -> list[PhantomFinding]:
    """Draw every planned finding into ``c``; findings with an empty mask are dropped."""
    draw = {
        "Consolidation": les.patch,
        "Lung Opacity": les.patch,
        "Pneumonia": les.patch,
        "Pleural Effusion": les.effusion,
        "Pneumothorax": les.pneumothorax,
        "Lung Lesion": les.lesion,
        "Atelectasis": les.atelectasis,
        "Edema": les.edema,
        "Pleural Other": les.pleural_other,
        "Fracture": dev.fracture,
        "Support Devices": dev.device,
    }
    out = []
    for plan in plans:
        if plan.label == "Cardiomegaly":
            found = dev.whole_node(plan, masks, 25)
        elif plan.label == "Enlarged Cardiomediastinum":
            found = dev.whole_node(plan, masks, 22)
        else:
            found = draw[plan.label](plan, g, f, masks, rng, c)
        if found is not None:
            out.append(found)
    return out
