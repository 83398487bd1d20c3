"""ONNX surgery on an exported encoder graph: expose inner tensors, swap the head behind an
output, drop what no output needs.

Tensor names follow ``torch.onnx.export``'s scoping of our modules: a ViT block's output is
the output of node ``/blocks.{i}/Add_1`` (its second residual add) and the final patch tokens
are the input of ``/patch_entity/norm/LayerNormalization``. Anything else raises ValueError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper

FINAL_TOKENS_NODE = "/patch_entity/norm/LayerNormalization"


def block_output(graph: onnx.GraphProto, block: int) -> str:
    """Name of ViT block ``block``'s output tensor (B, T, D)."""
    for node in graph.node:
        if node.name == f"/blocks.{block}/Add_1":
            return str(node.output[0])
    raise ValueError(f"the encoder graph has no block {block} (node /blocks.{block}/Add_1)")


def final_tokens(graph: onnx.GraphProto) -> str:
    """Name of the final normalised patch tokens (B, N, D) the entity head reads."""
    for node in graph.node:
        if node.name == FINAL_TOKENS_NODE:
            return str(node.input[0])
    raise ValueError(f"the encoder graph has no {FINAL_TOKENS_NODE} (not a patch entity head?)")


def tap_names(graph: onnx.GraphProto, blocks: Sequence[int]) -> list[str]:
    """Final patch tokens first, then the outputs of ``blocks`` in the given order."""
    return [final_tokens(graph)] + [block_output(graph, b) for b in blocks]


def with_outputs(model: onnx.ModelProto, names: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also outputs the inner tensors ``names`` (float, any shape)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    for name in names:
        if name not in have:
            out.graph.output.append(
                helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
            )
    return out


def constant_value(model: onnx.ModelProto, name: str) -> np.ndarray:
    """Value of the initializer ``name`` or of the ``Constant`` node (tensor ``value``) whose
    output it is; KeyError when ``name`` is neither."""
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            if len(n.attribute) == 1 and n.attribute[0].name == "value":
                return numpy_helper.to_array(n.attribute[0].t)
            raise KeyError(f"{name} is a Constant without a tensor value")
    raise KeyError(name)


def prune(graph: onnx.GraphProto) -> int:
    """Remove nodes and initialisers no graph output depends on; returns nodes removed."""
    needed = {o.name for o in graph.output}
    keep: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    removed = len(graph.node) - len(keep)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    vis = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(vis)
    return removed


def _onnx_opset(model: onnx.ModelProto) -> int | None:
    """The default ("" / ai.onnx) domain's opset version."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def replace_output(
    model: onnx.ModelProto,
    output: str,
    head: onnx.ModelProto,
    bind: Mapping[str, str],
    prefix: str,
    new_inputs: Sequence[str] = (),
) -> onnx.ModelProto:
    """``model`` with graph output ``output`` computed by ``head`` instead.

    ``bind`` maps each of ``head``'s inputs to the tensor of ``model`` it reads; binding one
    to ``output`` itself reads the old producer's value (the head then refines it, and the old
    producer stays). ``new_inputs`` names head inputs that become new inputs of the graph
    (bound to themselves, their type and shape taken from ``head``). One of ``head``'s
    outputs must be named ``output`` (its other outputs are dropped). Its nodes, initialisers
    and inner edges are renamed under ``prefix``; the old producer of ``output`` and whatever
    only it needed are pruned unless bound. Opsets must match.
    """
    if _onnx_opset(model) != _onnx_opset(head):
        raise ValueError("the head's opset differs from the encoder's")
    g, h = model.graph, head.graph
    if output not in {o.name for o in g.output} or output not in {o.name for o in h.output}:
        raise ValueError(f"{output!r} must be an output of both graphs")
    known = {i.name for i in g.input} | {i.name for i in g.initializer}
    known |= {o for n in g.node for o in n.output}
    if clash := sorted(set(new_inputs) & known):
        raise ValueError(f"new inputs already name encoder tensors: {clash}")
    bind = {**bind, **{name: name for name in new_inputs}}
    known |= set(new_inputs)
    if unbound := sorted({i.name for i in h.input} - set(bind)):
        raise ValueError(f"head inputs not bound to encoder tensors: {unbound}")
    if missing := sorted(set(bind.values()) - known):
        raise ValueError(f"the head reads tensors the encoder lacks: {missing}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    old = prefix + "replaced/" + output
    for node in g.node:  # detach the old producer; prune removes it unless the head reads it
        for k, name in enumerate(node.output):
            if name == output:
                node.output[k] = old
    g.input.extend(i for i in h.input if i.name in new_inputs)

    def rename(name: str) -> str:
        if name in bind:
            return old if bind[name] == output else bind[name]
        return name if not name or name == output else prefix + name

    for node in h.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.name = prefix + node.name
        new.input[:] = [rename(i) for i in node.input]
        new.output[:] = [rename(o) for o in node.output]
        g.node.append(new)
    for init in h.initializer:
        new_init = onnx.TensorProto()
        new_init.CopyFrom(init)
        new_init.name = rename(init.name)
        g.initializer.append(new_init)
    prune(g)
    onnx.checker.check_model(out)
    return out
