"""Export a checkpoint to a servable weights folder: ONNX graphs, tokenizers, manifest.

``python -m model_export.export_onnx CHECKPOINT OUT_DIR [--int8] [--fp16]``

Steps (timm's export -> check -> compare): export the four graphs (``encoder``,
``decoder_prefill``, ``decoder_step``, ``text_encoder``; opset 17, named I/O, dynamic batch
and sequence axes), ``onnx.checker.check_model(full_check=True)`` on each, save both
tokenizers and the node-name embeddings, write ``manifest.json`` with the SHA-256 of every
file, then load the folder with the service's :class:`OrtEngine` and compare with PyTorch:
encoder and text-encoder outputs within rtol 1e-3 / atol 1e-4, and identical greedy report
tokens (beam search too). Any drift raises :class:`ParityError` (exit status 1). Optional
int8 (dynamic quantisation, CPU) and fp16 (GPU) variants are written beside the fp32 graphs
with their measured parity and speed in the manifest; they are never checked for equality.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from tokenizers import Tokenizer

from model_export.checkpoint import Checkpoint, load_model
from model_export.export import graphs as G
from model_export.export import parity as P
from model_export.ssacl import anatomy
from model_export.ssacl.generation import GenerationConfig
from model_export.ssacl.model import SSACLModel
from model_export.ssacl.text_encoder import minilm_path
from service.inference.engine import OrtEngine
from service.inference.manifest import write_manifest

OPSET = 17
DECODER_TOKENIZER = "decoder_tokenizer.json"
TEXT_TOKENIZER = "text_tokenizer.json"
NODE_TEXT_EMB = "node_text_emb.npy"


@dataclass(frozen=True)
class ExportOptions:
    """What to export and how hard to check it."""

    opset: int = OPSET  # ONNX opset of every graph
    int8: bool = False  # also write dynamic-int8 report graphs (*.int8.onnx, CPU)
    text_fp16_storage: bool = False  # store the text encoder's weights as fp16 (half size)
    fp16: bool = False  # also write fp16 graphs (*.fp16.onnx, for CUDA)
    parity_images: int = 4  # seeded synthetic images for the parity checks
    max_new_tokens: int = 100  # report tokens decoded in the token-parity check
    beam_size: int = 3  # beam width also compared (1 = greedy only)
    provider: str = "cpu"  # ORT provider for parity ("cpu" keeps results reproducible)
    time_variants: bool = True  # measure per-report latency of each variant
    default_variant: str = "fp32"  # graphs the engine loads by default


@dataclass(frozen=True)
class ExportMeta:
    """Provenance written into the manifest."""

    name: str  # model name, e.g. "ssacl-small"
    version: str  # model version
    git_revision: str | None  # source revision the checkpoint was trained at
    training: dict[str, Any] = field(default_factory=dict)  # data, steps... from the checkpoint


def export_meta(ckpt: Checkpoint, path: Path) -> ExportMeta:
    """Provenance of a checkpoint (``model_export.checkpoint.load_model``) for the manifest."""
    training: dict[str, Any] = {"options": ckpt.options} if ckpt.options else {}
    training["state"] = asdict(ckpt.state)
    training["checkpoint"] = path.name
    step = ckpt.state.step
    return ExportMeta(f"ssacl-{ckpt.config.name}", f"0.1.0+step{step}", ckpt.git_revision, training)


#: Grounding post-processing the service applies (it reads them from the manifest).
SMOOTH_SIGMA = 1.5  # Gaussian sigma on the patch grid, patches (release grounding script)
BOX_THRESHOLD = 0.5  # box = largest connected region >= this fraction of the map's peak
DENSITY_FULL_SCALE = 8.0  # heatmap value 1 = this many times the uniform density (or the peak)


def grounding_facts(model: SSACLModel) -> dict[str, Any]:
    """The manifest's ``grounding`` section: method, post-processing constants and each
    node's reference entropy (nats; of the atlas prior, the spread of a typical node map)."""
    cfg = model.cfg
    pooling = cfg.anatomy_head == "pooling"
    p = model.anatomy_pool.log_atlas.detach().exp().double()
    p = p / p.sum(dim=1, keepdim=True)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=1)
    return {
        "node_maps": "anatomy-pooling" if pooling else "release-last-block-attention",
        "phrase_maps": "node-map-x-patch-evidence"
        if cfg.entity_head == "patch"
        else "text-patch-similarity",
        "smooth_sigma": SMOOTH_SIGMA,
        "box_threshold": BOX_THRESHOLD,
        "density_full_scale": DENSITY_FULL_SCALE,
        "reference_entropy": [round(float(x), 5) for x in entropy],
    }


def manifest_body(
    model: SSACLModel, meta: ExportMeta, graphs: dict[str, G.GraphIO], opts: ExportOptions
) -> dict[str, Any]:
    """Everything but the file hashes (``write_manifest`` adds those)."""
    cfg, d, gen = model.cfg, model.cfg.decoder, GenerationConfig()
    return {
        "model": {"name": meta.name, "version": meta.version},
        "config": cfg.to_dict(),
        "input": {
            "size": cfg.vision.image_size,
            "channels": 1,
            "mean": [cfg.image_mean],
            "std": [cfg.image_std],
            "resize": "whole image squashed to a square, bilinear (antialiased)",
            "range": "grey in [0, 1], white = dense",
        },
        "labels": list(anatomy.CHEXPERT_LABELS),
        "entity_threshold": cfg.entity_threshold,
        "grounding": grounding_facts(model),
        "anatomy": anatomy.graph_dict(),
        "tokenizers": {"decoder": DECODER_TOKENIZER, "text": TEXT_TOKENIZER},
        "constants": {"node_text_emb": NODE_TEXT_EMB},
        "text": {"max_len": cfg.text.max_len, "pad_id": 0},
        "decoder": {
            **{k: getattr(d, k) for k in ("pad_id", "unk_id", "bos_id", "eos_id", "sep_id")},
            **{k: getattr(d, k) for k in ("vocab_size", "depth", "heads", "max_len")},
            **{k: getattr(d, k) for k in ("prompt_max_len", "report_max_len")},
            "head_dim": d.dim // d.heads,
            "prefix_len": cfg.prefix_len,
            "cache_layout": "(2 * depth, batch, heads, seq, head_dim); key 2l, value 2l+1",
            "repetition_penalty": gen.repetition_penalty,
            "length_penalty": gen.length_penalty,
            "min_new_tokens": gen.min_length,
            "default_beam_size": 3,
        },
        "graphs": {k: g.as_dict() for k, g in graphs.items()},
        "default_variant": "fp32",
        "opset": opts.opset,
        "git_revision": meta.git_revision,
        "training": meta.training,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "exporter": {
            "torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
        },
    }  # fmt: skip


def check_parity(
    model: SSACLModel, tokenizer: Tokenizer, engine: OrtEngine, opts: ExportOptions, strict: bool
) -> dict[str, Any]:
    """Encoder/text diffs and token agreement; ``strict`` raises ParityError on any drift."""
    images = P.parity_images(opts.parity_images, model.cfg.vision.image_size)
    out: dict[str, Any] = {"images": len(images), "provider": engine.provider}
    x = engine.preprocess(images)["image"]  # a fresh export has no hires branch
    out["encoder_max_abs_diff"] = P.encoder_diffs(model, engine, x, strict)
    text_atol = P.TEXT_FP16_ATOL if opts.text_fp16_storage else P.ATOL
    out["text_max_abs_diff"] = P.text_diff(model, engine, strict, atol=text_atol)
    beams = (1, opts.beam_size) if opts.beam_size > 1 else (1,)
    for k in beams:
        r = P.decode_parity(model, tokenizer, engine, images, k, opts.max_new_tokens)
        out[f"decode_beam{k}"] = asdict(r)
        if strict and (r.identical != r.total or not r.entities_equal):
            raise P.ParityError(f"beam {k}: {r.identical}/{r.total} reports identical, {r}")
    if opts.time_variants:
        out["speed"] = P.time_engine(engine, images[:2])
    return out


def add_variant(
    model: SSACLModel,
    tokenizer: Tokenizer,
    out: Path,
    body: dict[str, Any],
    name: str,
    files: dict[str, str],
    opts: ExportOptions,
) -> None:
    """Check a variant's graphs, add them to ``body`` (and the manifest on disk), and record
    their measured parity and speed against PyTorch (never enforced: quantisation drifts)."""
    G.check_graphs(out, list(files.values()))
    body.setdefault("variants", {})[name] = {"graphs": files}
    write_manifest(out, body)
    provider = "auto" if name == "fp16" else opts.provider
    engine = OrtEngine.from_weights(out, provider=provider, variant=name)
    measured = check_parity(model, tokenizer, engine, opts, strict=False)
    if name == "fp16" and engine.provider == "CPUExecutionProvider":
        measured["note"] = "measured on CPU; fp16 is meant for CUDA, CPU speed is not relevant"
    body["variants"][name]["parity"] = measured


def export_model(
    model: SSACLModel,
    tokenizer: Tokenizer,
    out: Path,
    meta: ExportMeta,
    opts: ExportOptions = ExportOptions(),
) -> dict[str, Any]:
    """Export, check, write the manifest, verify parity (raises on drift); returns the manifest."""
    model = model.eval()
    out.mkdir(parents=True, exist_ok=True)
    graphs = G.export_all(model, out, opts.opset)
    if opts.text_fp16_storage:
        G.store_fp16(out / graphs["text_encoder"].file)
    G.check_graphs(out, [g.file for g in graphs.values()])
    tokenizer.save(str(out / DECODER_TOKENIZER))
    shutil.copyfile(minilm_path() / "tokenizer.json", out / TEXT_TOKENIZER)
    np.save(out / NODE_TEXT_EMB, G.node_text_embeddings(model).numpy().astype(np.float32))
    body = manifest_body(model, meta, graphs, opts)
    write_manifest(out, body)
    engine = OrtEngine.from_weights(out, provider=opts.provider, variant="fp32")
    body["parity"] = check_parity(model, tokenizer, engine, opts, strict=True)
    if opts.int8:
        add_variant(model, tokenizer, out, body, "int8", G.quantize_int8(out, graphs), opts)
    if opts.fp16:
        add_variant(model, tokenizer, out, body, "fp16", G.convert_fp16(out, graphs), opts)
    if opts.default_variant != "fp32" and opts.default_variant not in body.get("variants", {}):
        raise ValueError(f"default variant {opts.default_variant!r} was not exported")
    body["default_variant"] = opts.default_variant
    write_manifest(out, body)
    return body


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m model_export.export_onnx", description=__doc__)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--int8", action="store_true", help="also write dynamic-int8 graphs")
    p.add_argument("--fp16", action="store_true", help="also write fp16 graphs (GPU)")
    p.add_argument(
        "--text-fp16-storage", action="store_true", help="store text-encoder weights as fp16"
    )
    p.add_argument("--default-variant", default="fp32", choices=("fp32", "int8", "fp16"))
    p.add_argument("--parity-images", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--name", help="model name (default ssacl-<config>)")
    p.add_argument("--version", help="model version (default 0.1.0+step<N>)")
    a = p.parse_args(argv)
    model, tokenizer, ckpt = load_model(a.checkpoint)
    meta = export_meta(ckpt, a.checkpoint)
    meta = ExportMeta(
        a.name or meta.name, a.version or meta.version, meta.git_revision, meta.training
    )
    opts = ExportOptions(
        int8=a.int8, fp16=a.fp16, text_fp16_storage=a.text_fp16_storage,
        parity_images=a.parity_images,
        max_new_tokens=a.max_new_tokens, default_variant=a.default_variant,
    )  # fmt: skip
    try:
        body = export_model(model, tokenizer, a.out_dir, meta, opts)
    except P.ParityError as e:
        print(f"export FAILED parity: {e}", file=sys.stderr)
        return 1
    print(f"exported {meta.name} {meta.version} to {a.out_dir}")
    print(f"parity: {body['parity']}")
    for name, v in body.get("variants", {}).items():
        print(f"{name}: {v['parity']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
