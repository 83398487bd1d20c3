"""``model_export.export.hires_fit``: a high-resolution CNN fused into ``pathology_logits``
through a second encoder input; the engine feeds it, and nothing else moves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
F = torch.nn.functional

from model_export.export import hires_fit as H  # noqa: E402
from model_export.ssacl.entity_head import lse_pool  # noqa: E402
from model_export.ssacl.hires_head import HiResEntityCNN, StripEntityCNN  # noqa: E402
from service.inference.engine import OrtEngine  # noqa: E402
from service.inference.manifest import write_manifest  # noqa: E402
from service.inference.types import GenerateOptions  # noqa: E402


def test_the_cnn_reaches_the_encoder_grid_at_twice_its_side() -> None:
    torch.manual_seed(0)
    cnn = HiResEntityCNN(num_labels=3, sharpness=5.0).eval()
    logits, cells = cnn(torch.randn(2, 1, 448, 448))
    assert logits.shape == (2, 3) and cells.shape == (2, 196, 3)  # 448 / 32 = 14 per side
    assert torch.allclose(logits, lse_pool(cells, 5.0))


def test_fusion_recovers_known_weights() -> None:
    rng = np.random.default_rng(0)
    base, own = rng.normal(size=(4000, 2)), rng.normal(size=(4000, 2))
    true = np.array([[1.0, 2.0, -0.5], [0.5, 0.0, 0.3]])  # (a, b, c) per label
    z = true[:, 0] * base + true[:, 1] * own + true[:, 2]
    y = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(float)
    a, b, c = H.fit_fusion(base, own, y, l2=1e-3)
    assert np.allclose(np.stack([a, b, c], 1), true, atol=0.15)
    a2, b2, _ = H.fit_fusion(base, own, y, l2=1e5)  # a strong prior pulls both weights to 0
    assert np.abs(a2).max() < 0.05 and np.abs(b2).max() < 0.05


def test_augment_moves_masks_with_the_image() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(8, 1, 64, 64)
    x[:, :, 8:24, 8:24] = 1.0  # a bright square and its mask on the 4 x 4 grid (16 px cells)
    masks = torch.zeros(8, 1, 4, 4)
    masks[:, :, 0:2, 0:2] = 1.0
    y, m = H.augment(x.clone(), g, masks)
    assert m is not None and y.shape == x.shape and m.shape == masks.shape
    assert not torch.equal(x, y) and -0.5 < float(y.min()) and float(y.max()) < 1.5
    cells = F.avg_pool2d(y, 16)  # the square's brightness per cell follows its moved mask
    assert float(cells[m > 0].mean()) > 4 * float(cells[m == 0].mean())


def test_cell_loss_by_hand() -> None:
    cells = torch.tensor([[[2.0], [0.0], [0.0], [0.0]]])  # (1, 4 cells, 1 label), 2 x 2 grid
    masks = torch.zeros(1, 1, 4, 4)
    masks[0, 0, 0, 1] = 1.0  # inside the first cell after the 2 x 2 pool
    # cell 0: softplus(-2) = 0.12693; cells 1-3 at logit 0: log 2 each
    want = (0.126928 + 3 * 0.693147) / 4
    target = HiResEntityCNN.cell_targets(masks)
    assert H.cell_loss(cells, target, torch.ones(1, 1)).item() == pytest.approx(want, abs=1e-5)
    assert H.cell_loss(cells, target, torch.zeros(1, 1)).item() == 0.0  # unknown: no loss


def test_the_strip_cnn_reads_only_its_labels_and_the_top_rows() -> None:
    torch.manual_seed(0)
    cnn = StripEntityCNN(num_labels=4, label_ids=(2,), rows=0.5, sharpness=5.0).eval()
    x = torch.randn(2, 1, 448, 448)
    logits, cells = cnn(x)
    assert logits.shape == (2, 4) and cells.shape == (2, 14 * 28, 4)  # 16 px cells, top half
    assert torch.count_nonzero(logits[:, [0, 1, 3]]) == 0 and torch.count_nonzero(cells[..., 2])
    assert torch.allclose(logits, lse_pool(cells, 5.0))
    y = x.clone()
    y[:, :, 224:] = 0.0  # the bottom half is never read
    assert torch.equal(cnn(y)[0], logits)
    masks = torch.zeros(2, 4, 28, 28)
    masks[0, 2, 3, 5] = masks[0, 2, 20, 5] = 1.0  # one cell read, one below the strip
    target = cnn.cell_targets(masks)
    assert target.shape == cells.shape and float(target.sum()) == 1.0
    assert float(target[0, 3 * 28 + 5, 2]) == 1.0


@pytest.mark.parametrize("views", [False, True])
def test_extend_adds_a_second_input_and_changes_only_the_entity_logits(
    tiny_weights_dir: Path, tmp_path: Path, views: bool
) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights_dir, weights)
    if views:  # parity must compare one view with one view, not with the engine's mean
        body = json.loads((weights / "manifest.json").read_text())
        body.pop("files")
        body["input"]["entity_views"] = ["identity", "flip"]
        write_manifest(weights, body)
    old = OrtEngine.from_weights(weights, provider="cpu", threads=1)
    args = ["--work", str(tmp_path / "work"), "--train-phantoms", "64", "--val-phantoms", "48"]
    fit = ["--steps", "4", "--min-gain", "-1", "--threads", "1", "--workers", "1"]
    assert H.main([str(weights), *args, *fit]) == 0  # min gain -1: fuse every label it may
    body = json.loads((weights / "manifest.json").read_text())
    record, side = body["entity_hires"], 2 * old.manifest.image_size
    assert "calibration" not in body and body["input"]["hires_size"] == side
    assert body["graphs"]["encoder"]["inputs"] == ["image", "image_hires"]
    assert record["parity_max_abs_diff"] < H.PARITY_ATOL
    assert body["model"]["version"].endswith(".hires")
    assert (tmp_path / "work" / "cnn.pt").exists()  # cached: a rerun reuses the state
    new = OrtEngine.from_weights(weights, provider="cpu", threads=1)  # hashes renewed
    rng = np.random.default_rng(0)
    images = [rng.random((40, 36)).astype(np.float32) for _ in range(3)]
    feeds = new.preprocess(images)
    assert feeds["image_hires"].shape == (3, 1, side, side)
    a, b = old.encode(old.preprocess(images)), new.encode(feeds)
    assert np.array_equal(a.node_attn, b.node_attn) and np.array_equal(a.prefix, b.prefix)
    kept = [old.manifest.labels.index(n) for n in H.FOLDER_LABELS]  # never fused
    assert record["fused_labels"] and not set(record["fused_labels"]) & set(H.FOLDER_LABELS)
    assert np.array_equal(a.logits[:, kept], b.logits[:, kept])
    assert not np.allclose(a.logits, b.logits)
    with pytest.raises(ValueError, match="image_hires"):  # a bare array lacks the branch
        new.encode(feeds["image"])
    report = new.generate([images[0]], GenerateOptions(max_new_tokens=4, heatmaps=False))[0]
    assert len(report.text) > 0
    assert H.main([str(weights), *args, "--steps", "4"]) == 1  # refused: already extended


def test_extend_with_the_strip_head_fuses_only_its_label(
    tiny_weights_dir: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights_dir, weights)
    args = ["--work", str(tmp_path / "work"), "--train-phantoms", "96", "--val-phantoms", "32"]
    fit = ["--steps", "3", "--batch-size", "8", "--min-gain", "-1", "--threads", "1"]
    strip = ["--head", "strip", "--labels", "Fracture", "--workers", "1"]
    assert H.main([str(weights), *args, *fit, *strip]) == 0
    record = json.loads((weights / "manifest.json").read_text())["entity_hires"]
    assert record["head"] == "StripEntityCNN" and record["fused_labels"] == ["Fracture"]
    assert record["parity_max_abs_diff"] < H.PARITY_ATOL
    assert (tmp_path / "work" / "cnn_strip.pt").exists()
