"""Corpus-level NLG metrics as released: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D (pycocoevalcap).

Follows ``util/language_metrics.py`` of the release (itself RGRG's ``compute_NLG_scores``): one
reference per report, ``text.replace('.', ' .')`` then repeated spaces collapsed, no PTB
tokenizer. We also lowercase both sides and turn newlines into spaces (the release strips "\\n"
from generated text). METEOR runs the Java jar shipped with pycocoevalcap.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence

NLG_KEYS: tuple[str, ...] = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


class MeteorUnavailableError(RuntimeError):
    """METEOR was requested but no ``java`` executable is on PATH."""


def preprocess(text: str) -> str:
    """Release preprocessing: space before every '.', collapse spaces, lowercase, strip."""
    text = text.replace("\n", " ").replace(".", " .")
    return re.sub(" +", " ", text).strip().lower()


def _to_coco(texts: Sequence[str]) -> dict[str, list[str]]:
    return {str(i): [preprocess(t)] for i, t in enumerate(texts)}


def _meteor(gts: dict[str, list[str]], res: dict[str, list[str]]) -> float:
    if shutil.which("java") is None:
        raise MeteorUnavailableError(
            "METEOR needs a Java runtime (`java` on PATH, e.g. apt-get install default-jre); "
            "pass meteor=False (evaluate: --no-meteor) to skip it"
        )
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        # The jar reads one line per hypothesis; an empty hypothesis would desynchronise it.
        res = {k: [v[0] or "."] for k, v in res.items()}
        score, _ = scorer.compute_score(gts, res)
    finally:
        scorer.meteor_p.stdin.close()
        scorer.meteor_p.kill()
        scorer.meteor_p.wait()
    return float(score)


def nlg_scores(
    generated: Sequence[str], references: Sequence[str], *, meteor: bool = True
) -> dict[str, float]:
    """Corpus-level scores of ``generated`` against one reference each.

    Args:
        generated: N generated reports.
        references: N reference reports, aligned with ``generated``.
        meteor: compute METEOR (starts a JVM, ~2 s); when False the key is absent.

    Returns:
        ``{"BLEU-1".."BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}`` in [0, 1] (CIDEr in [0, 10]).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if len(generated) != len(references):
        raise ValueError(f"{len(generated)} generated reports but {len(references)} references")
    if not generated:
        raise ValueError("no reports to score")
    gts, res = _to_coco(references), _to_coco(generated)
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)}
    if meteor:
        out["METEOR"] = _meteor(gts, res)
    out["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    out["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return out
