"""The step graph's stacked caches as one tensor per layer slot, so no step copies them.

``python -m model_export.export.step_inputs WEIGHTS_DIR [--images 24] [--real FILE ...]``

The shared-context ``decoder_step.onnx`` (2026-12-02) takes the prefill's cache stacked as
``context`` (2 * depth, items, heads, L, head_dim) and the rows' generated keys stacked as
``past`` (2 * depth, N, heads, G, head_dim), and returns them grown by one as ``present``
(``torch.stack`` of the layers' keys and values). Each layer reads its slots with ``Slice`` +
``Gather`` on axis 0 and the stack ends in ``Unsqueeze`` + ``Concat``; ONNX Runtime
materialises all three, so every step copied the whole context (1.4 MB per image for
``small``; at 16 images half of a step's kernel time) and the generated keys twice more.
:func:`unstack_input` rewrites the graph so that slot ``j`` of a stacked input is its own
input (``context.j``, ``past.j``) and :func:`unstack_output` so that slot ``j`` of the stacked
output is its own output (``present.j``); the engine feeds views of its stacked context and
keeps the generated keys as one array per slot. Nothing else changes: the outputs are
bit-identical.

The exporter applies the rewrite to every new step graph (:func:`unstack_step`); the command
above migrates an exported folder in place (whatever of the three is still stacked), only
when the engine with the new graph writes the same reports (text and entities, greedy and
beam 3) on ``--images`` test phantoms and every ``--real`` image. The manifest records the
check under ``step_inputs`` (the context, 2026-12-06) and ``step_past`` (the generated keys,
later the same day).
"""

from __future__ import annotations

import json
from collections.abc import MutableSequence, Sequence
from pathlib import Path
from typing import Any

import onnx
from onnx import helper

from model_export.export.graph_splice import constant_value, prune

STACKED = "context"
STEP_STACKS = ("context", "past")  # stacked inputs of a shared-context step graph
STEP_OUTPUT = "present"  # its stacked output


def part_name(name: str, j: int) -> str:
    """Input name of slot ``j`` of the stacked input ``name``: ``context.3``."""
    return f"{name}.{j}"


def _axis(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "axis"), 0)


def _split_value_info(
    field: MutableSequence[onnx.ValueInfoProto], stacked: onnx.ValueInfoProto, names: Sequence[str]
) -> None:
    """Replace ``stacked`` (S, ...) in a graph's ``input`` or ``output`` list, in place, by one
    entry per name, each shaped like one slot (...) with the same element type."""
    shape = [d.dim_param or d.dim_value for d in stacked.type.tensor_type.shape.dim[1:]]
    elem = stacked.type.tensor_type.elem_type
    entries = list(field)
    at = entries.index(stacked)
    entries[at : at + 1] = [helper.make_tensor_value_info(n, elem, shape) for n in names]
    del field[:]
    field.extend(entries)


def _copy_with(
    model: onnx.ModelProto, name: str, kind: str
) -> tuple[onnx.ModelProto, onnx.ValueInfoProto]:
    """A copy of ``model`` and its graph ``kind`` ("input" or "output") named ``name``;
    ValueError when the graph has none."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    field = out.graph.input if kind == "input" else out.graph.output
    found = next((v for v in field if v.name == name), None)
    if found is None:
        raise ValueError(f"the graph has no {kind} {name!r}")
    return out, found


def unstack_input(model: onnx.ModelProto, name: str = STACKED) -> onnx.ModelProto:
    """A copy of ``model`` whose input ``name`` (S, ...) is replaced by S inputs ``name.j``
    (...), one per slot of axis 0.

    The input must be read only through ``Slice`` on axis 0 (constant bounds, step 1)
    followed by ``Gather`` of one constant scalar index on axis 0, which is how the exporter
    writes ``context[2 * layer + k]``; anything else raises ValueError. Nodes left unused are
    dropped.
    """
    out, stacked = _copy_with(model, name, "input")
    g = out.graph
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
            starts, _, axes, *steps = (constant_value(out, x) for x in sl.input[1:])
        except KeyError as exc:
            raise ValueError(f"Slice {sl.name!r} has non-constant bounds") from exc
        if axes.tolist() != [0] or (steps and steps[0].tolist() != [1]):
            raise ValueError(f"Slice {sl.name!r} is not a step-1 slice of axis 0")
        for ga in users.get(sl.output[0], []):
            if ga.op_type != "Gather" or _axis(ga) != 0 or ga.input[0] != sl.output[0]:
                raise ValueError(f"slice {sl.name!r} is read by {ga.op_type}, not Gather axis 0")
            index = constant_value(out, ga.input[1])
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
    _split_value_info(g.input, stacked, [part_name(name, j) for j in range(slots)])
    prune(g)
    return out


def unstack_output(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """A copy of ``model`` whose output ``name`` (S, ...) is replaced by S outputs ``name.j``
    (...), one per slot of axis 0.

    The output must be a ``Concat`` on axis 0 of S ``Unsqueeze`` nodes on axis 0, which is how
    the exporter writes ``torch.stack``; the tensors they unsqueeze become the outputs
    (renamed, no copy). Anything else raises ValueError. Nodes left unused are dropped.
    """
    out, stacked = _copy_with(model, name, "output")
    g = out.graph
    producer = {o: n for n in g.node for o in n.output}
    cat = producer.get(name)
    if cat is None or cat.op_type != "Concat" or _axis(cat) != 0:
        raise ValueError(f"{name!r} is not a Concat on axis 0")
    graph_names = {i.name for i in g.input} | {o.name for o in g.output}
    renames: dict[str, str] = {}
    for j, x in enumerate(cat.input):
        un = producer.get(x)
        if un is None or un.op_type != "Unsqueeze":
            raise ValueError(f"slot {j} of {name!r} is not an Unsqueeze")
        axes = (
            constant_value(out, un.input[1]).tolist()
            if len(un.input) > 1
            else list(next(a.ints for a in un.attribute if a.name == "axes"))
        )
        if axes != [0] or un.input[0] in graph_names or un.input[0] in renames:
            raise ValueError(f"slot {j} of {name!r} does not stack one inner tensor on axis 0")
        renames[un.input[0]] = part_name(name, j)
    for n in g.node:
        for k, x in enumerate(n.input):
            n.input[k] = renames.get(x, x)
        for k, x in enumerate(n.output):
            n.output[k] = renames.get(x, x)
    _split_value_info(g.output, stacked, list(renames.values()))
    prune(g)
    return out


def stacked_parts(model: onnx.ModelProto) -> tuple[str, ...]:
    """Which of a shared-context step graph's stacked tensors are still stacked: of
    ``context``, ``past`` (inputs) and ``present`` (output)."""
    names = {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
    return tuple(n for n in (*STEP_STACKS, STEP_OUTPUT) if n in names)


def unstack_step(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every stacked input and the stacked output of a shared-context step graph, per slot."""
    parts = stacked_parts(model)
    for name in STEP_STACKS:
        if name in parts:
            model = unstack_input(model, name)
    return unstack_output(model, STEP_OUTPUT) if STEP_OUTPUT in parts else model


def unstack_file(path: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """:func:`unstack_step` on a graph file, in place; returns its input and output names."""
    model = unstack_step(onnx.load(str(path)))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return tuple(i.name for i in model.graph.input), tuple(o.name for o in model.graph.output)


def migrate(weights: Path, images: int, real: Sequence[Path]) -> dict[str, Any]:
    """Rewrite ``weights/decoder_step.onnx`` with per-slot caches (module docstring); returns
    the check recorded in the manifest. Raises ValueError when refused."""
    from model_export.export.step_migration import swap_step_graph

    body = json.loads((weights / "manifest.json").read_text(encoding="utf-8"))
    step = body["graphs"]["decoder_step"]
    names = {*step["inputs"], *step["outputs"]}
    if not any(str(i).startswith("context") for i in step["inputs"]):
        raise ValueError("decoder_step is per-row: run model_export.export.step_migration first")
    stacked = [n for n in (*STEP_STACKS, STEP_OUTPUT) if n in names]
    if not stacked:
        raise ValueError("decoder_step already takes and returns its caches per slot")
    record = "step_inputs" if STACKED in stacked else "step_past"
    extra = {"from": "stacked " + ", ".join(stacked)}
    return swap_step_graph(weights, lambda path, _: unstack_file(path), record, images, real, extra)


def main(argv: Sequence[str] | None = None) -> int:
    from model_export.export.step_migration import run_cli

    return run_cli(migrate, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
