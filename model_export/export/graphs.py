"""Export the four ONNX graphs, check them, and build quantised variants."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from model_export.export import wrappers as W
from model_export.ssacl import anatomy
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


def _specs(model: SSACLModel) -> dict[str, _Spec]:
    cfg, b, t = model.cfg, 2, 5
    s, p, d = cfg.vision.image_size, cfg.prefix_len, cfg.decoder
    batch = {0: "batch"}
    seq = {0: "batch", 1: "total"}
    present = {1: "batch", 3: "total"}
    long = torch.long
    past = torch.zeros(2 * d.depth, b, d.heads, p + t, d.dim // d.heads)
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
        "decoder_step": _Spec(
            W.DecoderStepForExport(model),
            (
                torch.ones(b, 1, dtype=long),
                torch.ones(b, p + t + 1, dtype=long),
                torch.full((b, 1), p + t, dtype=long),
                past,
            ),
            W.STEP_INPUTS,
            W.DECODER_OUTPUTS,
            {"input_ids": batch, "attention_mask": seq, "position_ids": batch,
             "past": {1: "batch", 3: "past"}, "logits": batch, "present": present},
        ),
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
    """Write encoder, decoder prefill/step and text-encoder graphs to ``out``."""
    out_io: dict[str, GraphIO] = {}
    for key, sp in _specs(model).items():
        _export(sp.module, sp.args, out / FILES[key], (sp.inputs, sp.outputs), sp.axes, opset)
        out_io[key] = GraphIO(FILES[key], sp.inputs, sp.outputs)
    return out_io


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
) -> dict[str, str]:
    """Dynamic int8 (weights int8, activations quantised on the fly) of the report graphs.

    Returns graph key -> new file name (``*.int8.onnx``). The text encoder (``/ground`` only)
    is left out by default: int8 moved its embeddings by up to 0.06 in a dry run.
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
                op_types_to_quantize=["MatMul", "Gemm", "Gather"],
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
