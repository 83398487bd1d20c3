"""The ORT engine on the tiny exported weights: reports, grounding, facts, refusal paths."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_export.ssacl import anatomy
from service.inference.engine import OrtEngine
from service.inference.heatmaps import density, display_grid, reference_area, upsample
from service.inference.manifest import WeightsError
from service.inference.types import GenerateOptions, Report

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def engine(tiny_weights_dir: Path) -> OrtEngine:
    return OrtEngine.from_weights(tiny_weights_dir, provider="auto", threads=1)


def images() -> list[np.ndarray]:
    rng = np.random.default_rng(11)
    yy, xx = np.mgrid[0:1:180j, 0:1:140j]
    out = []
    for k in range(3):
        blob = np.exp(-((yy - 0.3 - 0.2 * k) ** 2 + (xx - 0.5) ** 2) / 0.02)
        out.append(np.clip(0.3 + 0.5 * blob + 0.05 * rng.standard_normal(yy.shape), 0, 1))
    out[2] = out[2][:120]  # a different size in the same batch
    return [im.astype(np.float32) for im in out]


def check_report(r: Report, hw: tuple[int, int], heat_hw: tuple[int, int] | None) -> None:
    assert r.text.strip() and r.num_tokens > 0
    assert set(r.entity_probs) == set(anatomy.CHEXPERT_LABELS)
    assert all(0.0 <= p <= 1.0 for p in r.entity_probs.values())
    assert set(r.candidates) <= set(anatomy.ROOT_NAMES) and r.candidates
    assert set(r.timings) == {"preprocess", "encoder", "decoding", "heatmaps"}
    assert r.sentences, "the tiny model writes at least one sentence"
    assert r.findings is not None
    for s in r.sentences:
        assert s.text in r.text and s.node_ids
        assert all(0 <= n < 32 for n in s.node_ids)
        assert 0.0 <= s.confidence <= 1.0
        x0, y0, x1, y1 = s.box
        assert 0 <= x0 < x1 <= hw[1] and 0 <= y0 < y1 <= hw[0]
        if heat_hw is None:
            assert s.heatmap is None
        else:
            assert s.heatmap is not None and s.heatmap.shape == heat_hw
            assert s.heatmap.dtype == np.float32
            assert 0.0 <= s.heatmap.min() and s.heatmap.max() <= 1.0 + 1e-6  # never stretched


@pytest.mark.parametrize("beam", [1, 3])
def test_generate_batch_of_three(engine: OrtEngine, beam: int) -> None:
    imgs = images()
    reports = engine.generate(imgs, GenerateOptions(beam_size=beam, max_new_tokens=40))
    assert len(reports) == 3
    for r, im in zip(reports, imgs, strict=True):
        check_report(r, im.shape, im.shape)


def test_batching_does_not_change_reports(engine: OrtEngine) -> None:
    """Left-padded prompts and row compaction: a batch equals the images one by one."""
    imgs = images()
    opts = GenerateOptions(beam_size=3, max_new_tokens=30, heatmaps=False)
    together = engine.generate(imgs, opts)
    alone = [engine.generate([im], opts)[0] for im in imgs]
    assert [r.text for r in together] == [r.text for r in alone]
    assert [r.entities for r in together] == [r.entities for r in alone]
    check_report(together[0], imgs[0].shape, None)


def test_heatmap_size_option(engine: OrtEngine) -> None:
    im = images()[0]
    (r,) = engine.generate([im], GenerateOptions(max_new_tokens=20, heatmap_size=(64, 48)))
    check_report(r, im.shape, (64, 48))


def test_entity_prompt_follows_threshold(engine: OrtEngine) -> None:
    (r,) = engine.generate(images()[:1], GenerateOptions(max_new_tokens=5))
    thr = engine.manifest.entity_threshold
    want = tuple(f for f in anatomy.FINDINGS if r.entity_probs[f] >= thr)
    assert r.entities == want


def test_ground(engine: OrtEngine) -> None:
    im = images()[0]
    phrases = ["right pleural effusion", "cardiac silhouette", "something unrelated"]
    out = engine.ground(im, phrases)
    assert [g.phrase for g in out] == phrases
    assert out[0].node_id == anatomy.node_id("right costophrenic angle")  # named by the phrase
    assert out[1].node_id == anatomy.node_id("cardiac silhouette")
    for g in out:
        assert -1.0 <= g.score <= 1.0 and 0 <= g.node_id < 32 and 0.0 <= g.confidence <= 1.0
        assert g.heatmap.shape == im.shape and 0.0 <= g.heatmap.min() <= g.heatmap.max() <= 1.0
        x0, y0, x1, y1 = g.box
        assert 0 <= x0 < x1 <= im.shape[1] and 0 <= y0 < y1 <= im.shape[0]
    assert [g.method for g in out] == [
        "anatomy-map-x-finding-evidence",
        "anatomy-map",
        "text-patch-similarity",
    ]
    # an anatomy phrase's heatmap is that node's map: density, smoothed, never stretched
    enc = engine.encode(engine.preprocess([im]))
    heart = anatomy.node_id("cardiac silhouette")
    rules = engine.map_rules
    area = reference_area([heart], rules)
    want = upsample(display_grid(density(enc.node_attn[0, heart]), rules, area), *im.shape)
    np.testing.assert_allclose(out[1].heatmap, want, atol=1e-5)
    # a requested heatmap size changes the map, not the box (still in image pixels)
    (small,) = engine.ground(im, phrases[:1], heatmap_hw=(20, 30))
    assert small.heatmap.shape == (20, 30) and small.box == out[0].box


def test_model_facts_and_provider(engine: OrtEngine) -> None:
    f = engine.model_facts
    assert f["name"] == "ssacl-tiny" and f["provider"] == engine.provider
    assert engine.provider in ("CPUExecutionProvider", "CUDAExecutionProvider")
    assert isinstance(f["weights_sha256"], str) and len(f["weights_sha256"]) == 64
    assert f["input_size"] == [1, 32, 32] and len(f["labels"]) == 14  # type: ignore[arg-type]


def test_bad_requests(tiny_weights_dir: Path, engine: OrtEngine) -> None:
    with pytest.raises(ValueError):
        engine.generate(images()[:1], GenerateOptions(beam_size=0))
    assert engine.generate([], GenerateOptions()) == []
    with pytest.raises(WeightsError, match="unknown provider"):
        OrtEngine.from_weights(tiny_weights_dir, provider="tpu")
    with pytest.raises(WeightsError, match="variant 'int4'"):
        OrtEngine.from_weights(tiny_weights_dir, provider="cpu", variant="int4")


def test_service_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "import service.app, service.inference.engine, service.inference.grounding\n"
        "bad = [m for m in ('torch', 'transformers', 'scipy') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_decoding_options_override_the_manifest(engine: OrtEngine) -> None:
    im = images()[0]
    base = GenerateOptions(beam_size=1, max_new_tokens=30, heatmaps=False)
    (longer,) = engine.generate([im], dataclasses.replace(base, min_new_tokens=30))
    assert longer.num_tokens == 30  # [EOS] forbidden before 30 tokens, at most 30
    (free,) = engine.generate([im], dataclasses.replace(base, repetition_penalty=1.0))
    assert free.text.strip()  # accepted and decoded (the default is the manifest's 2.0)


def test_decoder_threads_follow_the_decoder_size_unless_set() -> None:
    from service.inference.session import decoder_thread_count

    small, paper = {"dim": 256, "depth": 3}, {"dim": 768, "depth": 12}
    assert decoder_thread_count(small, None, None) == 1
    assert (
        decoder_thread_count(paper, 4, None) == 4
        and decoder_thread_count(paper, None, None) is None
    )
    assert decoder_thread_count(small, None, 2) == 2  # the setting wins


def test_decoder_threads_reach_the_sessions() -> None:
    engine = OrtEngine.from_weights(REPO / "weights", provider="cpu", decoder_threads=2)
    opts = {k: s.get_session_options().intra_op_num_threads for k, s in engine.sessions.items()}
    assert opts["decoder_step"] == opts["decoder_prefill"] == 2


def test_large_batches_run_the_decoder_on_all_threads_with_the_same_tokens() -> None:
    from model_export.data.phantom import generate_phantom
    from service.inference.session import WIDE_DECODER_ROWS

    engine = OrtEngine.from_weights(REPO / "weights", provider="cpu", threads=2)
    wide = engine.decoder.wide
    assert wide is not None  # small decoder: 1 thread for small searches, 2 for large ones
    assert engine.sessions["decoder_step"].get_session_options().intra_op_num_threads == 1
    assert wide["decoder_step"].get_session_options().intra_op_num_threads == 2
    assert engine.decoder.sessions_for(WIDE_DECODER_ROWS - 1) is engine.decoder.sessions
    assert engine.decoder.sessions_for(WIDE_DECODER_ROWS) is wide
    images = [generate_phantom(1_000_000_000 + i, 224).image for i in range(4)]
    opts = GenerateOptions(beam_size=3, max_new_tokens=40, heatmaps=False)
    on_wide = engine.generate(images, opts)  # 4 x 3 = 12 rows: the wide sessions
    engine.decoder.wide = None
    on_one = engine.generate(images, opts)
    assert [r.text for r in on_wide] == [r.text for r in on_one]
    # an explicit thread setting is used for every batch size
    fixed = OrtEngine.from_weights(REPO / "weights", provider="cpu", decoder_threads=1)
    assert fixed.decoder.wide is None


def test_padding_bars_are_cut_before_the_model_and_maps_placed_back() -> None:
    from model_export.data.phantom import generate_phantom

    engine = OrtEngine.from_weights(REPO / "weights", provider="cpu", threads=1)
    im = generate_phantom(1_000_000_007, 200).image.astype(np.float32)
    padded = np.zeros((200, 300), np.float32)
    padded[:, 50:250] = im  # a square image padded at the sides (a portrait case image)
    (plain,) = engine.ground(im, ["right lung"])
    (framed,) = engine.ground(padded, ["right lung"])
    np.testing.assert_allclose(framed.heatmap[:, 50:250], plain.heatmap, atol=1e-6)
    assert not framed.heatmap[:, :50].any() and not framed.heatmap[:, 250:].any()
    b, p = framed.box, plain.box
    assert (b[0], b[1], b[2], b[3]) == (p[0] + 50, p[1], p[2] + 50, p[3])
    opts = GenerateOptions(beam_size=1, max_new_tokens=30, heatmap_size=(100, 150))
    (r_plain,) = engine.generate([im], dataclasses.replace(opts, heatmap_size=(100, 100)))
    (r_framed,) = engine.generate([padded], opts)
    assert r_framed.text == r_plain.text  # the model saw the same input
    for s_plain, s_framed in zip(r_plain.sentences, r_framed.sentences, strict=True):
        assert s_framed.heatmap is not None and s_framed.heatmap.shape == (100, 150)
        assert s_plain.heatmap is not None
        np.testing.assert_allclose(s_framed.heatmap[:, 25:125], s_plain.heatmap, atol=1e-6)
        assert s_framed.box[0] == s_plain.box[0] + 50


def test_entity_views_average_the_logits_and_keep_the_first_views_maps(
    tiny_weights_dir: Path, engine: OrtEngine
) -> None:
    """With input.entity_views the pathology logits are the mean of the views' logits (each
    encoded alone by a plain engine); maps, prefix and evidence are the image's own."""
    from service.imaging.preprocess import image_view
    from service.inference.engine import VIEWS_SUFFIX

    views = ("identity", "flip", "center-0.9")
    multi = OrtEngine.from_weights(tiny_weights_dir, provider="cpu", threads=1)
    multi.manifest = dataclasses.replace(multi.manifest, entity_views=views)
    ims = images()[:2]
    feeds = multi.preprocess(ims)
    assert feeds["image" + VIEWS_SUFFIX].shape[0] == 2 * len(ims)
    got = multi.encode(feeds)
    plain = engine.encode(engine.preprocess(ims))
    per_view = [engine.encode(engine._inputs([image_view(im, v) for im in ims])) for v in views]
    assert got.logits is not None and all(p.logits is not None for p in per_view)
    want = np.mean([np.asarray(p.logits) for p in per_view], axis=0)
    np.testing.assert_allclose(got.logits, want, atol=1e-4)
    assert not np.allclose(got.logits, np.asarray(plain.logits), atol=1e-4)  # views change it
    np.testing.assert_allclose(got.node_attn, plain.node_attn, atol=1e-5)
    np.testing.assert_allclose(got.prefix, plain.prefix, atol=1e-5)
    probs = 1.0 / (1.0 + np.exp(-want / multi.temperature))
    np.testing.assert_allclose(got.entity_probs, probs, atol=1e-4)
    assert multi.model_facts["entity_views"] == list(views)
    assert multi.model_facts["map_input"] == "image"


def test_mirrored_views_are_the_resized_views_mirrored(
    tiny_weights_dir: Path, engine: OrtEngine
) -> None:
    """The feeds of mirrored views (their crop resized once, then mirrored) equal resizing
    each mirrored view to float32 rounding; unmirrored views are exact."""
    from service.imaging.preprocess import VIEWS, image_view, resize_plane
    from service.inference.engine import VIEWS_SUFFIX

    multi = OrtEngine.from_weights(tiny_weights_dir, provider="cpu", threads=1)
    multi.manifest = dataclasses.replace(multi.manifest, entity_views=VIEWS)
    rng = np.random.default_rng(7)
    ims = [rng.random((301, 517), np.float32), rng.random((1000, 999), np.float32)]
    got = multi._inputs(ims)["image" + VIEWS_SUFFIX][:, 0]
    m, side = multi.manifest, multi.manifest.image_size
    want = [
        (resize_plane(image_view(im, v), side) - m.mean) / m.std for v in VIEWS[1:] for im in ims
    ]
    for k, (g, w) in enumerate(zip(got, want, strict=True)):
        if VIEWS[1 + k // len(ims)].endswith("flip"):
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-6)  # 6e-8 of the grey range
        else:
            np.testing.assert_array_equal(g, w)


def test_entity_views_must_start_with_the_image(tiny_weights_dir: Path) -> None:
    import json

    from service.inference.manifest import parse_manifest

    body = json.loads((tiny_weights_dir / "manifest.json").read_text())
    for bad in (["flip", "identity"], ["identity", "mirror"], []):
        body["input"]["entity_views"] = bad
        with pytest.raises(WeightsError, match="entity_views"):
            parse_manifest(tiny_weights_dir, json.dumps(body))


def test_maps_from_the_equalized_image(tiny_weights_dir: Path, engine: OrtEngine) -> None:
    """grounding.map_input = "equalized": node maps are the plain engine's maps of the
    histogram-equalised model input; logits, prefix and evidence stay the image's own."""
    from service.imaging.preprocess import equalize
    from service.inference.engine import MAPS_SUFFIX

    eq = OrtEngine.from_weights(tiny_weights_dir, provider="cpu", threads=1)
    eq.map_rules = dataclasses.replace(eq.map_rules, map_input="equalized")
    ims = images()[:2]
    feeds = eq.preprocess(ims)
    assert feeds["image" + MAPS_SUFFIX].shape == feeds["image"].shape
    got, plain = eq.encode(feeds), engine.encode(engine.preprocess(ims))
    m = engine.manifest
    raw = (feeds["image"] * m.std + m.mean)[:, 0]  # the resized image in [0, 1]
    want = engine.encode(((np.stack([equalize(r) for r in raw]) - m.mean) / m.std)[:, None])
    np.testing.assert_allclose(got.node_attn, want.node_attn, atol=1e-5)
    assert not np.allclose(got.node_attn, plain.node_attn, atol=1e-4)
    assert got.logits is not None and plain.logits is not None
    np.testing.assert_allclose(got.logits, plain.logits, atol=1e-5)
    np.testing.assert_allclose(got.prefix, plain.prefix, atol=1e-5)
    assert eq.map_rules.method == "anatomy-pooling-on-equalized-image"
    (report,) = eq.generate(ims[:1], GenerateOptions(beam_size=1, max_new_tokens=12))
    assert report.grounding_method == "anatomy-pooling-on-equalized-image"


def test_medial_shift_moves_only_the_whole_lung_maps(
    tiny_weights_dir: Path, engine: OrtEngine
) -> None:
    """grounding.medial_shift: the shown "right lung" / "left lung" maps are the plain
    engine's moved toward the midline; every other map and the prefix are unchanged."""
    from model_export.ssacl import anatomy
    from service.inference.heatmaps import shift_columns

    shifted = OrtEngine.from_weights(tiny_weights_dir, provider="cpu", threads=1)
    shifted.map_rules = dataclasses.replace(shifted.map_rules, medial_shift=0.05)
    ims = images()[:2]
    got, plain = shifted.encode(shifted.preprocess(ims)), engine.encode(engine.preprocess(ims))
    cols = 0.05 * plain.node_attn.shape[-1]
    lungs = {anatomy.node_id("right lung"): cols, anatomy.node_id("left lung"): -cols}
    for n in range(anatomy.NUM_NODES):
        want = (
            shift_columns(plain.node_attn[:, n], lungs[n]) if n in lungs else plain.node_attn[:, n]
        )
        np.testing.assert_allclose(got.node_attn[:, n], want, atol=1e-6)
    np.testing.assert_allclose(got.prefix, plain.prefix, atol=1e-6)
    assert shifted.model_facts["lung_map_medial_shift"] == 0.05
    assert engine.model_facts["lung_map_medial_shift"] == 0.0


def test_ground_skips_the_entity_views(tiny_weights_dir: Path, engine: OrtEngine) -> None:
    """Phrase grounding makes no entity decision: the encoder gets the image alone, and the
    groundings equal a one-view engine's."""
    from service.inference.engine import VIEWS_SUFFIX

    multi = OrtEngine.from_weights(tiny_weights_dir, provider="cpu", threads=1)
    multi.manifest = dataclasses.replace(multi.manifest, entity_views=("identity", "flip"))
    seen: list[set[str]] = []
    encode = multi.encode
    multi.encode = lambda x: (seen.append(set(x)), encode(x))[1]  # type: ignore[method-assign,func-returns-value]
    (got,) = multi.ground(images()[0], ["right lung"])
    (want,) = engine.ground(images()[0], ["right lung"])
    assert seen and not any(k.endswith(VIEWS_SUFFIX) for k in seen[0])
    assert got.heatmap is not None and want.heatmap is not None
    np.testing.assert_allclose(got.heatmap, want.heatmap, atol=1e-6)
