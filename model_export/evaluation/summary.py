"""The evaluation result as strict JSON and as a short table."""

from __future__ import annotations

import math
from typing import Any


def clean_json(x: Any) -> Any:
    """NaN / inf -> None so the JSON is strict."""
    if isinstance(x, dict):
        return {k: clean_json(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [clean_json(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def format_table(res: dict[str, Any]) -> str:
    """A short human-readable summary of the headline numbers."""
    ph, rows = res["phantom"], [f"held-out phantoms: {res['phantom']['n']}"]
    rows += [f"{k:<40}{v:8.4f}" for k, v in ph["nlg"].items()]
    for k in ("CE-14_F1_MICRO", "CE-14_F1_MACRO", "CE-5_F1_MICRO"):
        rows.append(f"{k:<40}{ph['clinical'][k]:8.4f}")
    rows.append(f"{'grounding (n)':<40}{'pointing':>8} {'mIoU':>8} {'CNR':>8}")
    g = ph["grounding"]
    named = [(k, g[k]) for k in ("generated_sentences", "reference_sentences", "phrase")]
    named += [("anatomy_mean", g["anatomy_mean"])]
    named += [(f"oracle {k}", v) for k, v in g["oracle"].items()]
    for name, agg in named:
        n = f" ({int(agg['n'])})" if "n" in agg else ""
        rows.append(
            f"{name + n:<40}" + " ".join(f"{agg[k]:8.4f}" for k in ("pointing", "mIoU", "CNR"))
        )
    for k, v in ph.get("entity_auroc", {}).items():
        rows.append(f"{'phantom entity AUROC ' + k:<40}{v:8.4f}")
    for k, v in res.get("folder", {}).get("auroc", {}).items():
        rows.append(f"{'folder AUROC ' + k:<40}{v:8.4f}")
    return "\n".join(rows)
