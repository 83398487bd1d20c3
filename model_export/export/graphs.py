"""Export the four ONNX graphs, check them, and build quantised variants."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from model_export.export import wrappers as W
from model_export.ssacl import anatomy
from model_export.ssacl.config import DecoderConfig
from model_export.ssacl.model import SSACLModel

FILES = {
    "encoder": "encoder.onnx",
    "decoder_prefill": "decoder_prefill.onnx",
    "decoder_step": "decoder_step.onnx",
    "text_encoder": "text_encoder.onnx",
}


@dataclass(frozen=True)
class GraphIO:
    """A graph's file and I/O names, as stored in the manifest."""

    file: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "inputs": list(self.inputs), "outputs": list(self.outputs)}


def _export(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    names: tuple[tuple[str, ...], tuple[str, ...]],
    axes: dict[str, dict[int, str]],
    opset: int,
) -> None:
    """TorchScript-based ``torch.onnx.export`` (the dynamo exporter needs onnxscript)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer warnings
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=list(names[0]),
            output_names=list(names[1]),
            dynamic_axes=axes,
            do_constant_folding=True,
        )


@dataclass(frozen=True)
class _Spec:
    module: nn.Module
    args: tuple[Tensor, ...]  # example inputs (shapes only matter along static axes)
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    axes: dict[str, dict[int, str]]  # dynamic axes per input/output name


def step_spec(owner: nn.Module, d: DecoderConfig, p: int) -> _Spec:
    """The shared-context ``decoder_step`` graph of ``owner.decoder`` (an ``SSACLModel`` or
    anything holding a ``ReportDecoder`` as ``decoder``) with a ``p``-token visual prefix."""
    b, t, hd, long = 2, 5, d.dim // d.heads, torch.long
    args = (
        torch.ones(2 * b, 1, dtype=long),  # 2 rows per context item (beams)
        torch.full((2 * b, 1), p + t, dtype=long),
        torch.zeros(2 * d.depth, b, d.heads, p + t, hd),
        torch.ones(b, p + t, dtype=long),
        torch.zeros(2 * d.depth, 2 * b, d.heads, 3, hd),
    )
    axes = {"input_ids": {0: "batch"}, "position_ids": {0: "batch"},
            "context": {1: "items", 3: "context"}, "context_mask": {0: "items", 1: "context"},
            "past": {1: "batch", 3: "past"}, "logits": {0: "batch"},
            "present": {1: "batch", 3: "total"}}  # fmt: skip
    module = W.DecoderStepForExport(owner)  # type: ignore[arg-type]  # uses .decoder only
    return _Spec(module, args, W.STEP_INPUTS, W.DECODER_OUTPUTS, axes)


def entity_head_spec(head: nn.Module, shapes: Sequence[tuple[int, ...]]) -> _Spec:
    """A refitted entity head (``entity_refit``): inputs ``tap0``, ``tap1``, ... shaped like
    ``shapes`` (B, T_i, D_i), outputs ``pathology_logits`` (B, C) and ``patch_logits``."""
    names = tuple(f"tap{i}" for i in range(len(shapes)))
    outputs = ("pathology_logits", "patch_logits")
    args = tuple(torch.zeros((2, *s[1:])) for s in shapes)
    return _Spec(head, args, names, outputs, {n: {0: "batch"} for n in names + outputs})


def hires_fusion_spec(fusion: nn.Module, side: int, labels: int) -> _Spec:
    """The high-resolution fusion (``hires_fit``): inputs ``image_hires`` (B, 1, side, side)
    and ``base_logits`` (B, labels), output ``pathology_logits`` (B, labels)."""
    names, outputs = ("image_hires", "base_logits"), ("pathology_logits",)
    args = (torch.zeros(2, 1, side, side), torch.zeros(2, labels))
    return _Spec(fusion, args, names, outputs, {n: {0: "batch"} for n in names + outputs})


def export_spec(sp: _Spec, path: Path, opset: int) -> GraphIO:
    """Export one graph to ``path``; its manifest entry."""
    _export(sp.module, sp.args, path, (sp.inputs, sp.outputs), sp.axes, opset)
    return GraphIO(path.name, sp.inputs, sp.outputs)


def _specs(model: SSACLModel) -> dict[str, _Spec]:
    cfg, b, t = model.cfg, 2, 5
    s, p, d = cfg.vision.image_size, cfg.prefix_len, cfg.decoder
    batch = {0: "batch"}
    seq = {0: "batch", 1: "total"}
    present = {1: "batch", 3: "total"}
    long = torch.long
    return {
        "encoder": _Spec(
            W.EncoderForExport(model),
            (torch.zeros(b, 1, s, s),),
            W.ENCODER_INPUTS,
            W.ENCODER_OUTPUTS,
            dict.fromkeys((*W.ENCODER_INPUTS, *W.ENCODER_OUTPUTS), batch),
        ),
        "decoder_prefill": _Spec(
            W.DecoderPrefillForExport(model),
            (
                torch.zeros(b, p, d.dim),
                torch.ones(b, t, dtype=long),
                torch.ones(b, p + t, dtype=long),
                torch.arange(p + t).expand(b, -1).contiguous(),
            ),
            W.PREFILL_INPUTS,
            W.DECODER_OUTPUTS,
            {"prefix": batch, "input_ids": {0: "batch", 1: "text"}, "attention_mask": seq,
             "position_ids": seq, "logits": batch, "present": present},
        ),
        "decoder_step": step_spec(model, d, p),
        "text_encoder": _Spec(
            W.TextEncoderForExport(model),
            (torch.ones(b, 7, dtype=long), torch.ones(b, 7, dtype=long)),
            W.TEXT_INPUTS,
            W.TEXT_OUTPUTS,
            {"input_ids": {0: "batch", 1: "len"}, "attention_mask": {0: "batch", 1: "len"},
             "text_emb": batch},
        ),
    }  # fmt: skip


def export_all(model: SSACLModel, out: Path, opset: int) -> dict[str, GraphIO]:
    """Write encoder, decoder prefill/step and text-encoder graphs to ``out``; the encoder
    has no NaN guards (``export.encoder_guards``), the step graph takes and returns its caches
    as one tensor per layer slot (``export.step_inputs``)."""
    from model_export.export.encoder_guards import drop_file
    from model_export.export.step_inputs import unstack_file

    io = {key: export_spec(sp, out / FILES[key], opset) for key, sp in _specs(model).items()}
    drop_file(out / io["encoder"].file)
    step = io["decoder_step"]
    io["decoder_step"] = GraphIO(step.file, *unstack_file(out / step.file))
    return io


def export_legacy_step(model: SSACLModel, path: Path, opset: int) -> GraphIO:
    """The step graph as exported before 2026-12-02 (whole per-row cache in and out), for
    testing the engine's support of such weights."""
    d, p, b = model.cfg.decoder, model.cfg.prefix_len, 2
    args = (torch.ones(b, 1, dtype=torch.long), torch.ones(b, p + 6, dtype=torch.long),
            torch.full((b, 1), p + 5, dtype=torch.long),
            torch.zeros(2 * d.depth, b, d.heads, p + 5, d.dim // d.heads))  # fmt: skip
    axes = {"input_ids": {0: "batch"}, "attention_mask": {0: "batch", 1: "total"},
            "position_ids": {0: "batch"}, "past": {1: "batch", 3: "past"},
            "logits": {0: "batch"}, "present": {1: "batch", 3: "total"}}  # fmt: skip
    module = W.LegacyDecoderStepForExport(model)
    return export_spec(_Spec(module, args, W.LEGACY_STEP_INPUTS, W.DECODER_OUTPUTS, axes), path,
                       opset)  # fmt: skip


def check_graphs(out: Path, files: list[str]) -> None:
    """``onnx.checker.check_model(full_check=True)`` on every graph (raises on failure)."""
    for f in files:
        onnx.checker.check_model(onnx.load(str(out / f)), full_check=True)


@torch.no_grad()
def node_text_embeddings(model: SSACLModel) -> torch.Tensor:
    """(32, E) L2-normalised text embeddings of the 32 node names (for /ground)."""
    from model_export.ssacl.text_encoder import tokenize

    ids, mask = tokenize(anatomy.NODE_NAMES, model.cfg.text.max_len)
    emb = model.encode_text(ids, mask)
    return torch.nn.functional.normalize(emb, dim=-1)


def store_fp16(path: Path, min_elements: int = 1024) -> None:
    """Rewrite ``path`` with its large float32 initialisers stored as float16, each followed
    by a ``Cast`` back to float32: half the file size, float32 compute (ORT folds the casts
    at load), weights rounded to fp16 (relative error <= 2**-11)."""
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    casts = []
    for init in list(g.initializer):
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            continue
        half = numpy_helper.from_array(
            numpy_helper.to_array(init).astype(np.float16), init.name + "__fp16"
        )
        g.initializer.remove(init)
        g.initializer.append(half)
        casts.append(
            helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT, name=half.name)
        )
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)
    onnx.save(model, str(path))


def quantize_int8(
    out: Path,
    graphs: dict[str, GraphIO],
    keys: tuple[str, ...] = ("encoder", "decoder_prefill", "decoder_step"),
    per_channel: bool = False,
    op_types: tuple[str, ...] = ("MatMul", "Gemm", "Gather"),
    exclude: tuple[str, ...] = (),
) -> dict[str, str]:
    """Dynamic int8 (weights int8, activations quantised on the fly) of the report graphs.

    Returns graph key -> new file name (``*.int8.onnx``). The text encoder (``/ground`` only)
    is left out by default: int8 moved its embeddings by up to 0.06 in a dry run.
    ``per_channel``: one scale per output column of each weight instead of one per tensor;
    ``op_types``: the operators whose weights are quantised (without ``Gather`` the token
    embedding stays fp32); ``exclude``: node names kept fp32 (e.g. ``/lm_head/MatMul``).
    """
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # ORT nags

    files = {}
    for key, g in graphs.items():
        if key not in keys:
            continue
        name = g.file.replace(".onnx", ".int8.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(out / g.file),
                str(out / name),
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(op_types),
                per_channel=per_channel,
                nodes_to_exclude=list(exclude),
            )
        files[key] = name
    return files


def convert_fp16(out: Path, graphs: dict[str, GraphIO]) -> dict[str, str]:
    """fp16 weights and compute with fp32 inputs/outputs (``keep_io_types``), for GPUs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    files = {}
    for key, g in graphs.items():
        name = g.file.replace(".onnx", ".fp16.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m16 = OnnxModel(
                convert_float_to_float16(onnx.load(str(out / g.file)), keep_io_types=True)
            )
            m16.topological_sort()  # the converter appends its input casts at the end
        onnx.save(m16.model, str(out / name))
        files[key] = name
    return files
