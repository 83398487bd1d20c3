"""ONNX export: checker, manifest, parity against PyTorch, drift detection, KV cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from model_export.checkpoint import load_model
from model_export.export import parity as P
from model_export.export_onnx import ExportOptions, check_parity
from service.inference.engine import OrtEngine
from service.inference.manifest import WeightsError, load_manifest, sha256_file
from service.inference.search import build_prefill


@pytest.fixture(scope="module")
def engine(tiny_weights_dir: Path) -> OrtEngine:
    return OrtEngine.from_weights(tiny_weights_dir, provider="cpu", threads=1)


def test_graphs_pass_checker_with_named_dynamic_io(tiny_weights_dir: Path) -> None:
    m = load_manifest(tiny_weights_dir)
    assert set(m.graphs) == {"encoder", "decoder_prefill", "decoder_step", "text_encoder"}
    for spec in m.graphs.values():
        model = onnx.load(str(tiny_weights_dir / spec.file))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version >= 17
        assert tuple(i.name for i in model.graph.input) == spec.inputs
        assert tuple(o.name for o in model.graph.output) == spec.outputs
        batch = model.graph.input[0].type.tensor_type.shape.dim[0]
        past_batch = [d for d in model.graph.input if d.name == "past"]
        if past_batch:  # the cache's batch axis is axis 1
            batch = past_batch[0].type.tensor_type.shape.dim[1]
        assert batch.dim_param, f"{spec.file}: batch axis is not dynamic"


def test_manifest_content(tiny_weights_dir: Path) -> None:
    raw = json.loads((tiny_weights_dir / "manifest.json").read_text())
    assert raw["model"]["name"] == "ssacl-tiny"
    assert raw["input"] == raw["input"] | {"size": 32, "mean": [0.4978], "std": [0.2449]}
    assert len(raw["labels"]) == 14 and raw["anatomy"]["version"].startswith("ssacl-release")
    assert len(raw["anatomy"]["nodes"]) == 32 and raw["opset"] == 17
    assert raw["tokenizers"] == {"decoder": "decoder_tokenizer.json", "text": "text_tokenizer.json"}
    assert raw["training"]["state"]["step"] == 60
    for rel, digest in raw["files"].items():
        assert sha256_file(tiny_weights_dir / rel) == digest
    par = raw["parity"]
    for mode in ("decode_beam1", "decode_beam3"):
        assert par[mode]["identical"] == par[mode]["total"] == 4
    assert max(par["encoder_max_abs_diff"].values()) < 1e-3


def test_encoder_and_greedy_tokens_match_pytorch(tiny_weights_dir: Path, engine: OrtEngine) -> None:
    model, tok, _ = load_model(tiny_weights_dir.parent / "tiny.pt")
    images = P.parity_images(5, 32, seed=7)
    x = engine.preprocess(images)["image"]
    diffs = P.encoder_diffs(model, engine, x)  # raises past 1e-3/1e-4
    assert set(diffs) == {
        "node_attn",
        "pathology_logits",
        "prefix",
        "patch_emb",
        "cls",
        "patch_evidence",
    }
    r = P.decode_parity(model, tok, engine, images, beam_size=1, max_new_tokens=40)
    assert r.identical == r.total == 5 and r.entities_equal
    with torch.no_grad():
        ref = model.generate(torch.from_numpy(engine.preprocess(images)["image"]), tok)
    assert all(len(x.token_ids) > 3 for x in ref), "the trained tiny model writes text"


def test_drift_is_detected(tiny_weights_dir: Path, engine: OrtEngine) -> None:
    model, tok, _ = load_model(tiny_weights_dir.parent / "tiny.pt")
    with torch.no_grad():
        model.opt_proj.weight.mul_(1.01)  # the exported graphs no longer match this model
    opts = ExportOptions(parity_images=2, max_new_tokens=8, beam_size=1, time_variants=False)
    with pytest.raises(P.ParityError, match="prefix"):
        check_parity(model, tok, engine, opts, strict=True)


def test_tampered_weights_refused(tiny_weights_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "w"
    shutil.copytree(tiny_weights_dir, copy)
    onnx_file = copy / "decoder_step.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="decoder_step.onnx"):
        OrtEngine.from_weights(copy, provider="cpu")
    onnx_file.unlink()
    with pytest.raises(WeightsError, match="missing.*decoder_step.onnx"):
        OrtEngine.from_weights(copy, provider="cpu")


def test_kv_cache_decoding_equals_full_recompute(engine: OrtEngine) -> None:
    """Greedy with the step graph == greedy re-running the prefill graph on the whole text."""
    images = P.parity_images(3, 32, seed=3)
    enc = engine.encode(engine.preprocess(images))
    found = [()] * 3  # no entities: all leaves visible, same prompt
    cached = engine.decoder.search(enc.prefix, found, beam_size=1, max_new=12)
    d = engine.manifest.decoder
    prompt = engine.decoder.prompt_ids(())
    pmask = np.ones(enc.prefix.shape[:2], np.int64)
    pmask[:, 25] = 0  # CLS hidden
    for row, seq in enumerate(cached):
        text = list(prompt)
        for t in range(len(seq.tokens) + 1):
            pf = build_prefill(pmask[row : row + 1], [text], int(d["pad_id"]))
            logits, _ = engine.decoder.prefill(
                enc.prefix[row : row + 1], pf.input_ids, pf.attention_mask, pf.position_ids
            )
            scores = logits[0].astype(np.float64)
            gen = text[len(prompt) :]
            if gen:  # the same repetition penalty as the search
                idx = np.unique(gen)
                rp = float(d["repetition_penalty"])
                scores[idx] = np.where(scores[idx] > 0, scores[idx] / rp, scores[idx] * rp)
            nxt = int(scores.argmax())
            if t == len(seq.tokens):
                assert nxt == int(d["eos_id"]) or len(seq.tokens) == 12
                break
            assert nxt == seq.tokens[t], f"row {row} step {t}"
            text.append(nxt)


def test_fp16_storage_of_text_encoder(tiny_weights_dir: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from model_export.export.graphs import store_fp16

    src = tiny_weights_dir / "text_encoder.onnx"
    dst = tmp_path / "text16.onnx"
    shutil.copyfile(src, dst)
    store_fp16(dst)
    onnx.checker.check_model(onnx.load(str(dst)), full_check=True)
    assert dst.stat().st_size < 0.6 * src.stat().st_size
    ids = np.random.default_rng(0).integers(1000, 20000, (3, 9))
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    a = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    b = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert 0 < np.abs(a - b).max() < P.TEXT_FP16_ATOL


def test_int8_variant_is_measured_and_loadable(tiny_weights_dir: Path, tmp_path: Path) -> None:
    from model_export.export import graphs as G
    from model_export.export_onnx import add_variant
    from service.inference.manifest import write_manifest
    from service.inference.types import GenerateOptions

    copy = tmp_path / "w"
    shutil.copytree(tiny_weights_dir, copy)
    model, tok, _ = load_model(tiny_weights_dir.parent / "tiny.pt")
    body = json.loads((copy / "manifest.json").read_text())
    m = load_manifest(copy)
    graphs = {k: G.GraphIO(g.file, g.inputs, g.outputs) for k, g in m.graphs.items()}
    opts = ExportOptions(parity_images=2, max_new_tokens=16, beam_size=1, time_variants=False)
    add_variant(model, tok, copy, body, "int8", G.quantize_int8(copy, graphs), opts)
    write_manifest(copy, body)
    par = load_manifest(copy).raw["variants"]["int8"]["parity"]
    assert 0.0 <= par["decode_beam1"]["token_agreement"] <= 1.0
    assert 0 < max(par["encoder_max_abs_diff"].values()) < 1.0  # quantised: close, not equal
    eng = OrtEngine.from_weights(copy, provider="cpu", variant="int8")
    assert eng.variant == "int8" and eng.model_facts["variant"] == "int8"
    assert eng.sessions["encoder"]._model_path.endswith("encoder.int8.onnx")
    assert eng.generate(P.parity_images(1, 32), GenerateOptions(max_new_tokens=8))[0].text
