"""Tiny training runs: loss falls, checkpoint, NaN stop keeps the last good one, exact resume."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from model_export import train
from model_export.checkpoint import load_checkpoint
from model_export.ssacl.config import get_config
from model_export.ssacl.model import build_model
from model_export.training import cli, loop
from model_export.training.distributed import DistInfo, GlobalBatchSampler
from model_export.training.options import TrainOptions, parse_args
from model_export.training.precision import enable_grad_checkpointing, use_bf16
from model_export.training.schedule import build_optimizer, lr_at, schedule_progress

STEPS, SAVE = 16, 8  # 40 phantoms / batch 4: the epoch ends at step 10, inside the resume


def _args(out: Path, *extra: str) -> list[str]:
    return ["--config", "tiny", "--phantom", "40", "--tokenizer-phantoms", "64", "--vocab-size",
            "400", "--steps", str(STEPS), "--batch-size", "4", "--lr", "2e-3", "--warmup-steps",
            "3", "--save-every", str(SAVE), "--val-phantom", "4", "--no-progress", "--out",
            str(out), *extra]  # fmt: skip


def _log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny_run")
    assert train.main(_args(out)) == 0
    return out


def test_parse_args_defaults_and_flags() -> None:
    o = parse_args(["--config", "tiny", "--max-minutes", "1.5", "--no-progress"])
    assert o.config == "tiny" and o.max_minutes == 1.5 and o.progress is False
    assert o.weight_decay == TrainOptions().weight_decay == 0.05


def test_lr_schedule_warmup_then_cosine() -> None:
    assert lr_at(0, 10, 1e-3, 0.0, 0.0) == pytest.approx(1e-6)
    assert lr_at(5, 10, 1e-3, 0.0, 0.0) == pytest.approx(1e-6 + (1e-3 - 1e-6) / 2)
    assert lr_at(10, 10, 1e-3, 0.0, 0.0) == pytest.approx(1e-3)
    assert lr_at(50, 10, 1e-3, 1e-5, 0.5) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2)
    assert lr_at(99, 10, 1e-3, 1e-5, 1.0) == pytest.approx(1e-5)


def test_no_weight_decay_on_biases_and_norms() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    decay, no_decay = build_optimizer(model, 1e-3, 0.05).param_groups
    assert decay["weight_decay"] == 0.05 and len(decay["params"]) == 1
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 3
    assert build_optimizer(model, 1e-3, 0.05).defaults["betas"] == (0.9, 0.95)


def test_tiny_run_loss_falls_and_checkpoints(tiny_run: Path) -> None:
    log = [r for r in _log(tiny_run) if "total" in r]
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    first = sum(r["total"] for r in log[:4]) / 4
    last = sum(r["total"] for r in log[-4:]) / 4
    assert last < first - 0.5, (first, last)
    ckpt = load_checkpoint(tiny_run / "last.pt")
    assert ckpt.state.step == STEPS and ckpt.config.name == "tiny"
    assert ckpt.state.epoch == 1 and ckpt.state.epoch_step == STEPS - 10
    assert ckpt.optimizer and ckpt.optimizer["state"] and ckpt.tokenizer
    assert (tiny_run / "tokenizer.json").exists()
    final = [r for r in _log(tiny_run) if r.get("final")]
    assert final and math.isfinite(final[0]["val"]["total"])


def test_nan_stops_keeps_last_good_checkpoint_then_resume_is_exact(
    tiny_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real, calls = loop.forward_losses, {"n": 0}

    def poisoned(model: Any, batch: Any) -> Any:
        calls["n"] += 1
        out = real(model, batch)
        if calls["n"] == SAVE + 3:  # three steps after the step-8 checkpoint
            out.lm = out.lm * float("nan")
            out.total = out.total * float("nan")
        return out

    monkeypatch.setattr(loop, "forward_losses", poisoned)
    # the WordPiece trainer of `tokenizers` is not deterministic (huggingface/tokenizers#1794):
    # reuse the straight run's vocabulary so that both runs are comparable step by step
    same_vocab = ["--tokenizer", str(tiny_run / "tokenizer.json")]
    assert train.main(_args(tmp_path, *same_vocab)) == 2
    err = capsys.readouterr().err
    assert f"non-finite loss at step {SAVE + 3}" in err and "lm=nan" in err and "last.pt" in err
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept.state.step == SAVE

    monkeypatch.setattr(loop, "forward_losses", real)
    assert train.main(_args(tmp_path, "--resume", str(tmp_path / "last.pt"))) == 0
    resumed = load_checkpoint(tmp_path / "last.pt")
    straight = load_checkpoint(tiny_run / "last.pt")
    assert resumed.state.step == STEPS
    totals = {r["step"]: r["total"] for r in _log(tiny_run) if "total" in r}
    again = {r["step"]: r["total"] for r in _log(tmp_path) if "total" in r and r["step"] > SAVE}
    assert again == {k: v for k, v in totals.items() if k > SAVE}
    # same data position, RNG streams and optimizer state: identical to the uninterrupted run
    for name, tensor in straight.model.items():
        torch.testing.assert_close(resumed.model[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_time_budget_drives_the_cosine() -> None:
    o = TrainOptions(steps=1000, warmup_steps=10, max_minutes=2.0)
    assert schedule_progress(10, o, 0.0) == 0.0
    assert schedule_progress(10, o, 60.0) == pytest.approx(0.5)  # half the time used
    assert schedule_progress(505, o, 1.0) == pytest.approx(0.5)  # half the steps done
    assert schedule_progress(20, o, 500.0) == 1.0
    assert schedule_progress(505, TrainOptions(steps=1000, warmup_steps=10), 1e9) == 0.5


def test_resume_warns_on_changed_data_options(
    tiny_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = load_checkpoint(tiny_run / "last.pt")
    ckpt.options = {"batch_size": 4, "phantom": 64, "lr": 1.0}
    assert cli.warn_changed_options(TrainOptions(batch_size=8, phantom=64, lr=2.0), ckpt) == [
        "batch_size"
    ]
    assert "batch_size" in capsys.readouterr().err


def test_init_fine_tunes_from_a_checkpoint_with_the_alignment_loss(
    tiny_run: Path, tmp_path: Path
) -> None:
    src = load_checkpoint(tiny_run / "last.pt")
    out = tmp_path / "ft"
    args = _args(out, "--init", str(tiny_run / "last.pt"), "--align-weight", "1.0")
    args[args.index("--steps") + 1] = "2"
    assert train.main(args) == 0
    ft = load_checkpoint(out / "last.pt")
    assert ft.state.step == 2  # a new run, not a resume
    assert ft.tokenizer == src.tokenizer  # the checkpoint's vocabulary, not a new one
    assert ft.config.loss_weights.align == 1.0
    assert "align" in _log(out)[0]


def test_global_batch_sampler_splits_each_global_batch_by_rank() -> None:
    def share(rank: int, world: int) -> list[int]:
        return list(GlobalBatchSampler(22, 8, DistInfo(rank, world), start=4))

    assert share(0, 1) == list(range(4, 20))  # whole global batches only: 4..11, 12..19
    halves = [share(r, 2) for r in (0, 1)]
    assert halves == [[4, 5, 6, 7, 12, 13, 14, 15], [8, 9, 10, 11, 16, 17, 18, 19]]
    with pytest.raises(ValueError, match="not divisible by the 3 processes"):
        GlobalBatchSampler(22, 8, DistInfo(0, 3))


def test_bf16_is_cuda_only_and_grad_checkpointing_keeps_the_gradients() -> None:
    assert use_bf16(None, torch.device("cpu")) is False
    with pytest.raises(ValueError, match="--bf16 needs a CUDA device"):
        use_bf16(True, torch.device("cpu"))
    grads = []
    for recompute in (False, True):
        torch.manual_seed(0)
        model = build_model(get_config("tiny"), pretrained_text=False).train()
        if recompute:
            assert enable_grad_checkpointing(model) == 2 + 1 + 2 + 2
        keys = set(model.state_dict())
        x, ids = torch.randn(2, 1, 32, 32), torch.randint(5, 100, (2, 7))
        loss = model.vit.forward_features(x, model.graph_queries()).patches.square().mean()
        loss = loss + model.decoder(None, ids, torch.ones_like(ids))[0].square().mean()
        loss = loss + model.text(ids, torch.ones_like(ids)).square().mean()  # BERT, dropout on
        loss.backward()  # type: ignore[no-untyped-call]
        grads.append({k: p.grad for k, p in model.named_parameters() if p.grad is not None})
        assert set(model.state_dict()) == keys  # checkpoints stay loadable
    assert len(grads[0]) > 20 and grads[0].keys() == grads[1].keys()
    for k, g in grads[0].items():
        torch.testing.assert_close(grads[1][k], g, msg=k)
