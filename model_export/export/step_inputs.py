"""The step graph's shared context as one input per layer slot, so no step copies it.

``python -m model_export.export.step_inputs WEIGHTS_DIR [--images 24] [--real FILE ...]``

The shared-context ``decoder_step.onnx`` (2026-12-02) takes the prefill's cache stacked as
``context`` (2 * depth, items, heads, L, head_dim). Each layer reads its keys and values with
``Slice`` + ``Gather`` on axis 0, and ONNX Runtime materialises both: every step copied the
whole context (1.4 MB per image for ``small``; at 16 images half of a step's kernel time went
to that copy). :func:`unstack_input` rewrites the graph so that slot ``j`` of the stack is its
own input ``context.j`` (items, heads, L, head_dim); the engine then feeds views of its
stacked cache (no copy on the host). Nothing else changes: the outputs are bit-identical.

The exporter applies the rewrite to every new step graph; the command above migrates an
exported folder in place, only when the engine with the new graph writes the same reports
(text and entities, greedy and beam 3) on ``--images`` test phantoms and every ``--real``
image. The manifest records the check under ``step_inputs``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from model_export.export.graph_splice import prune

STACKED = "context"


def part_name(name: str, j: int) -> str:
    """Input name of slot ``j`` of the stacked input ``name``: ``context.3``."""
    return f"{name}.{j}"


def _constant(model: onnx.ModelProto, name: str) -> np.ndarray:
    """Value of an initializer or ``Constant`` node output; KeyError when not constant."""
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(helper.get_attribute_value(n.attribute[0]))
    raise KeyError(name)


def _axis(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "axis"), 0)


def unstack_input(model: onnx.ModelProto, name: str = STACKED) -> onnx.ModelProto:
    """A copy of ``model`` whose input ``name`` (S, ...) is replaced by S inputs ``name.j``
    (...), one per slot of axis 0.

    The input must be read only through ``Slice`` on axis 0 (constant bounds, step 1)
    followed by ``Gather`` of one constant scalar index on axis 0, which is how the exporter
    writes ``context[2 * layer + k]``; anything else raises ValueError. Nodes left unused are
    dropped.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    stacked = next((i for i in g.input if i.name == name), None)
    if stacked is None:
        raise ValueError(f"the graph has no input {name!r}")
    dims = stacked.type.tensor_type.shape.dim
    if not dims or not dims[0].HasField("dim_value"):
        raise ValueError(f"{name!r} needs a fixed first axis (the stacked slots)")
    slots = int(dims[0].dim_value)
    users: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    found: set[int] = set()
    for sl in users.get(name, []):
        if sl.op_type != "Slice" or sl.input[0] != name:
            raise ValueError(f"{name!r} is read by {sl.op_type} {sl.name!r}, not Slice")
        try:
            starts, _, axes, *steps = (_constant(out, x) for x in sl.input[1:])
        except KeyError as exc:
            raise ValueError(f"Slice {sl.name!r} has non-constant bounds") from exc
        if axes.tolist() != [0] or (steps and steps[0].tolist() != [1]):
            raise ValueError(f"Slice {sl.name!r} is not a step-1 slice of axis 0")
        for ga in users.get(sl.output[0], []):
            if ga.op_type != "Gather" or _axis(ga) != 0 or ga.input[0] != sl.output[0]:
                raise ValueError(f"slice {sl.name!r} is read by {ga.op_type}, not Gather axis 0")
            index = _constant(out, ga.input[1])
            if index.ndim != 0 or ga.output[0] in outputs:
                raise ValueError(f"Gather {ga.name!r} does not take one slot")
            j = int(starts[0]) + int(index)
            found.add(j)
            for user in users.get(ga.output[0], []):
                for k, x in enumerate(user.input):
                    if x == ga.output[0]:
                        user.input[k] = part_name(name, j)
    if found != set(range(slots)):
        raise ValueError(f"slots read {sorted(found)}, expected 0..{slots - 1}")
    shape = [d.dim_param or d.dim_value for d in dims[1:]]
    elem = stacked.type.tensor_type.elem_type
    parts = [helper.make_tensor_value_info(part_name(name, j), elem, shape) for j in range(slots)]
    inputs = list(g.input)
    at = inputs.index(stacked)
    inputs[at : at + 1] = parts
    del g.input[:]
    g.input.extend(inputs)
    prune(g)
    return out


def unstack_file(path: Path, name: str = STACKED) -> tuple[str, ...]:
    """:func:`unstack_input` on a graph file, in place; returns the new input names."""
    model = unstack_input(onnx.load(str(path)), name)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return tuple(i.name for i in model.graph.input)


def migrate(weights: Path, images: int, real: Sequence[Path]) -> dict[str, Any]:
    """Rewrite ``weights/decoder_step.onnx`` with per-slot context inputs (module docstring);
    returns the check recorded in the manifest. Raises ValueError when refused."""
    from model_export.export.step_migration import swap_step_graph

    body = json.loads((weights / "manifest.json").read_text(encoding="utf-8"))
    if STACKED not in body["graphs"]["decoder_step"]["inputs"]:
        raise ValueError("decoder_step has no stacked 'context' input (per-row or done)")
    extra = {"from": "stacked context"}
    return swap_step_graph(
        weights, lambda path, _: unstack_file(path), "step_inputs", images, real, extra
    )


def main(argv: Sequence[str] | None = None) -> int:
    from model_export.export.step_migration import run_cli

    return run_cli(migrate, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
