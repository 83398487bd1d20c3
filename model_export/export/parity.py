"""Parity of the exported graphs (through the service's ORT engine) against PyTorch.

The engine is the code that serves requests, so these checks cover preprocessing, the graphs,
the numpy KV-cache search and the tokenizer round trip together.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from model_export.ssacl import entities as ent
from model_export.ssacl.generation import GenerationConfig
from model_export.ssacl.model import SSACLModel
from model_export.ssacl.text_encoder import tokenize
from service.inference.engine import OrtEngine
from service.inference.types import GenerateOptions

RTOL, ATOL = 1e-3, 1e-4  # encoder / text-encoder tolerance (conventions item 8)
# Text encoder with fp16-stored weights: rounding each weight by <= 2**-11 relative moves the
# unit-norm embedding by ~1e-4 (8e-5 measured on MiniLM); 5e-4 keeps cosines within 1e-6.
TEXT_FP16_ATOL = 5e-4
PHRASES = ("right pleural effusion", "the heart is enlarged", "left lower lobe opacity")


class ParityError(AssertionError):
    """ONNX outputs drifted from PyTorch beyond tolerance."""


def parity_images(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` seeded grey images in [0, 1] (smooth blobs + noise); the last one non-square."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = (size, size) if i < n - 1 else (size + size // 2, size + size // 4)
        yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
        img = 0.3 + 0.05 * rng.standard_normal((h, w))
        for _ in range(4):
            cy, cx, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.05, 0.3)
            img += rng.uniform(0.2, 0.6) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r**2)
        out.append(np.clip(img, 0.0, 1.0).astype(np.float32))
    return out


@dataclass(frozen=True)
class DecodeParity:
    """Token agreement of PyTorch and ORT reports for one decoding mode."""

    beam_size: int
    identical: int  # reports with identical token ids
    total: int
    token_agreement: float  # fraction of positions equal (over the longer sequence)
    entities_equal: bool


def encoder_diffs(
    model: SSACLModel, engine: OrtEngine, x: np.ndarray, strict: bool = True
) -> dict[str, float]:
    """Max abs difference of every encoder output; ``strict``: ParityError past tolerance."""
    from model_export.export.wrappers import ENCODER_OUTPUTS, EncoderForExport

    with torch.no_grad():
        ref = EncoderForExport(model).eval()(torch.from_numpy(x))
    got = engine.sessions["encoder"].run(list(ENCODER_OUTPUTS), {"image": x})
    diffs = {}
    for name, r, g in zip(ENCODER_OUTPUTS, ref, got, strict=True):
        diffs[name] = float(np.abs(g - r.numpy()).max())
        try:
            np.testing.assert_allclose(g, r.numpy(), rtol=RTOL, atol=ATOL, err_msg=name)
        except AssertionError as e:
            if strict:
                raise ParityError(f"encoder output {name!r} drifted: {e}") from e
    return diffs


def text_diff(
    model: SSACLModel, engine: OrtEngine, strict: bool = True, atol: float = ATOL
) -> float:
    """Max abs difference of phrase embeddings (engine tokenisation vs the model's)."""
    ids, mask = tokenize(list(PHRASES), model.cfg.text.max_len)
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model.encode_text(ids, mask), dim=-1).numpy()
    got = engine.embed_text(list(PHRASES))
    try:
        np.testing.assert_allclose(got, ref, rtol=RTOL, atol=atol, err_msg="text_emb")
    except AssertionError as e:
        if strict:
            raise ParityError(f"text encoder drifted: {e}") from e
    return float(np.abs(got - ref).max())


def _agreement(a: list[list[int]], b: list[list[int]]) -> float:
    same = sum(sum(x == y for x, y in zip(p, q, strict=False)) for p, q in zip(a, b, strict=True))
    total = sum(max(len(p), len(q), 1) for p, q in zip(a, b, strict=True))
    return same / total


def decode_parity(
    model: SSACLModel,
    tokenizer: Tokenizer,
    engine: OrtEngine,
    images: list[np.ndarray],
    beam_size: int,
    max_new_tokens: int,
) -> DecodeParity:
    """Report tokens of ``SSACLModel.generate`` vs the engine's search on the same inputs."""
    d = engine.manifest.decoder
    max_new = min(max_new_tokens, int(d["report_max_len"]))  # the engine's cap
    x = engine.preprocess(images)["image"]  # the exported model has no hires branch
    enc = engine.encode(x)
    thr = engine.manifest.entity_threshold
    found = [ent.entities_from_scores(p.tolist(), thr) for p in enc.entity_probs]
    seqs = engine.decoder.search(enc.prefix, found, beam_size, max_new)
    gen = GenerationConfig(
        max_new_tokens=max_new,
        num_beams=beam_size,
        min_length=int(d.get("min_new_tokens", 0)),
        repetition_penalty=float(d["repetition_penalty"]),
        length_penalty=float(d["length_penalty"]),
    )
    ref = model.generate(torch.from_numpy(x), tokenizer, gen, threshold=thr)
    a = [r.token_ids for r in ref]
    b = [s.tokens for s in seqs]
    return DecodeParity(
        beam_size=beam_size,
        identical=sum(p == q for p, q in zip(a, b, strict=True)),
        total=len(a),
        token_agreement=_agreement(a, b),
        entities_equal=[r.entities for r in ref] == found,
    )


def time_engine(engine: OrtEngine, images: list[np.ndarray], repeats: int = 3) -> dict[str, Any]:
    """Median seconds per report of ``engine.generate`` (greedy, batch 1, heatmaps on)."""
    opts = GenerateOptions(beam_size=1)
    samples = []
    for _ in range(repeats):
        for img in images:
            t0 = time.perf_counter()
            engine.generate([img], opts)
            samples.append(time.perf_counter() - t0)
    return {"median_s_per_report": float(np.median(samples)), "reports": len(samples)}
