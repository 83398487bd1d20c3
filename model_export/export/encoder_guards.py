"""The encoder without the NaN guards of its exported attention, which our mask never needs.

``python -m model_export.export.encoder_guards WEIGHTS_DIR [--images 24] [--real FILE ...]``

``torch.onnx.export`` writes each masked ``scaled_dot_product_attention`` of the ViT as
``Softmax`` followed by ``Where(IsNaN(softmax), 0, softmax)``: a guard for rows whose every
key is masked (softmax of all ``-inf`` is NaN). The ViT's mask
(``ssacl.vit.query_attention_mask``) lets every token see itself, so no row is fully masked and
on finite scores the guard never fires (the engine refuses non-finite images before the
graph). Each guard still reads and writes the whole (B, H, L, L) attention twice per block;
:func:`drop_nan_guards` re-points the guard's readers to the softmax itself and drops the
``IsNaN`` / ``Where`` pair. Measured on the shipped encoder (``docs/PERFORMANCE.md``):
bit-identical outputs, 1.03-1.05x faster.

The exporter applies it to every new encoder graph; the command above migrates an exported
folder's default encoder in place, only when every encoder output (node maps, entity
probabilities, prefix, patch embeddings, evidence) is bit-identical through the engine on
``--images`` test phantoms, every ``--real`` image and one batch of four phantoms. The manifest
records the check under ``encoder_guards``. Variants (``variants`` in the manifest) keep
their graphs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from model_export.export.graph_splice import constant_value, prune

RECORD = "encoder_guards"
#: ``EncoderOutput`` arrays compared by the migration (``evidence`` and ``logits`` may be None)
ENCODE_FIELDS = ("node_attn", "entity_probs", "prefix", "patch_emb", "evidence", "logits")


def _zero_constant(model: onnx.ModelProto, name: str) -> bool:
    """Whether ``name`` is an initializer or ``Constant`` output whose values are all 0."""
    try:
        return not np.any(constant_value(model, name))
    except KeyError:
        return False


def nan_guards(model: onnx.ModelProto) -> dict[str, str]:
    """The guards of ``model``: ``{Where output: Softmax output}`` for every
    ``Where(IsNaN(s), 0, s)`` whose ``s`` is a ``Softmax`` output and whose output is not a
    graph output."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}
    found: dict[str, str] = {}
    for n in g.node:
        if n.op_type != "Where" or len(n.input) != 3 or n.output[0] in outputs:
            continue
        cond, fill, soft = n.input
        test, source = producer.get(cond), producer.get(soft)
        if (
            test is not None
            and test.op_type == "IsNaN"
            and test.input[0] == soft
            and source is not None
            and source.op_type == "Softmax"
            and _zero_constant(model, fill)
        ):
            found[n.output[0]] = soft
    return found


def drop_nan_guards(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """A copy of ``model`` whose NaN guards (:func:`nan_guards`) are gone, their readers fed by
    the softmax itself; returns it and the number of guards removed. Nodes left unused (the
    ``IsNaN``, ``Where`` and fill constants) are dropped."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    guards = nan_guards(out)
    for n in out.graph.node:
        for k, x in enumerate(n.input):
            n.input[k] = guards.get(x, x)
    prune(out.graph)
    return out, len(guards)


def drop_file(path: Path) -> int:
    """:func:`drop_nan_guards` on a graph file, in place (checked); returns guards removed."""
    model, removed = drop_nan_guards(onnx.load(str(path)))
    if removed:
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return removed


def encoder_outputs_equal(old: Path, new: Path, images: list[np.ndarray]) -> dict[str, Any]:
    """Every ``OrtEngine.encode`` output of the two folders on each image alone and on the
    first four as one batch: how many calls gave bit-identical arrays. Raises ValueError
    unless all did."""
    from service.inference.engine import OrtEngine

    a = OrtEngine.from_weights(old, provider="cpu")
    b = OrtEngine.from_weights(new, provider="cpu")
    calls = [[im] for im in images] + ([images[:4]] if len(images) >= 4 else [])
    same = 0
    for batch in calls:
        ea, eb = a.encode(a.preprocess(batch)), b.encode(b.preprocess(batch))
        pairs = [(getattr(ea, f), getattr(eb, f)) for f in ENCODE_FIELDS]
        same += all(
            (x is None and y is None)
            or (x is not None and y is not None and np.array_equal(x, y, equal_nan=True))
            for x, y in pairs
        )
    check = {"calls": len(calls), "identical": same}
    if same != len(calls):
        raise ValueError(f"the encoder without its guards changes outputs: {check}")
    return check


def migrate(weights: Path, images: int, real: Sequence[Path]) -> dict[str, Any]:
    """Drop the NaN guards of ``weights``' default encoder (module docstring); returns the check
    recorded in the manifest. Raises ValueError when refused."""
    from model_export.export.step_migration import swap_graph

    found: dict[str, Any] = {}  # the rewrite's count, recorded with the check

    def rewrite(path: Path, body: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        found["removed"] = drop_file(path)
        if not found["removed"]:
            raise ValueError(f"{path.name} has no NaN guard to drop")
        entry = body["graphs"]["encoder"]
        return tuple(entry["inputs"]), tuple(entry["outputs"])

    return swap_graph(weights, "encoder", rewrite, encoder_outputs_equal, RECORD, images, real,
                      found)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    from model_export.export.step_migration import run_cli

    return run_cli(migrate, __doc__.split("\n\n")[0], argv)


if __name__ == "__main__":
    sys.exit(main())
