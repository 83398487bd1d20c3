"""Data-parallel training on CPU (gloo, 2 processes on 127.0.0.1).

The ranks are forked from the test process (multiprocessing start method "fork": no second
torch / transformers import, which costs ~8 s per process on 2 cores) and join through the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...), then run
``model_export.train``'s real entry point. Randomness that depends on the rank is pinned for
the comparison: MAE mask noise comes from a fixed table indexed by the row's position in the
*global* batch, BERT dropout is off, every report gets its prompt and the whole report is
encoded (config of the ``--init`` checkpoint). Augmentation stays on: it is seeded by the
global sample index.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model_export import train
from model_export.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from model_export.data.pipeline import PhantomSource
from model_export.data.tokenizer import train_report_tokenizer
from model_export.ssacl import gather, text_encoder, vit
from model_export.ssacl import losses as L
from model_export.ssacl.config import get_config
from model_export.ssacl.entities import prompt_corpus
from model_export.ssacl.model import build_model

STEPS, BATCH = 3, 4  # global batch 4 = 2 ranks x 2
NOISE = torch.rand(64, 4096, generator=torch.Generator().manual_seed(7))  # (global row, patch)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fixed_masking(x: torch.Tensor, ratio: float) -> tuple[torch.Tensor, ...]:
    """``vit.random_masking`` with noise from NOISE rows at the global batch position."""
    b, n, d = x.shape
    first = dist.get_rank() * b if dist.is_initialized() else 0
    ids_shuffle = torch.argsort(NOISE[first : first + b, :n], dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    keep = int(n * (1 - ratio))
    kept = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, d))
    mask = torch.ones(b, n)
    mask[:, :keep] = 0
    return kept, torch.gather(mask, 1, ids_restore), ids_restore


@pytest.fixture()
def pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank-independent randomness (inherited by forked ranks)."""
    monkeypatch.setattr(vit, "random_masking", _fixed_masking)
    real = text_encoder.bert_config

    def no_dropout(cfg: Any) -> Any:
        c = real(cfg)
        c.hidden_dropout_prob = c.attention_probs_dropout_prob = 0.0
        return c

    monkeypatch.setattr(text_encoder, "bert_config", no_dropout)
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")


def _rank(rank: int, world: int, port: int, fn: Callable[..., Any], *args: Any) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))  # fmt: skip
    fn(*args)


def _spawn(world: int, fn: Callable[..., Any], *args: Any, timeout: float = 120.0) -> None:
    """Run ``fn(*args)`` in ``world`` forked ranks; a failing (or hanging) rank fails the test
    and no rank outlives it."""
    ctx, port = mp.get_context("fork"), _free_port()
    procs = [ctx.Process(target=_rank, args=(r, world, port, fn, *args), daemon=True)
             for r in range(world)]  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        codes = [p.exitcode for p in procs]
        assert codes == [0] * world, f"rank exit codes {codes} (None = still running)"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()


def _train(argv: list[str]) -> None:
    if train.main(argv) != 0:
        raise RuntimeError(f"train.main failed: {argv}")


def _init_checkpoint(path: Path) -> Path:
    """tiny, every report prompted and encoded whole; fixed weights and vocabulary."""
    src = PhantomSource(range(32), 32)
    tok = train_report_tokenizer([str(src.phantom(i).report) for i in range(32)] + prompt_corpus(),
                                 300)  # fmt: skip
    cfg = get_config("tiny").with_vocab_size(tok.get_vocab_size())
    text = dataclasses.replace(cfg.text, sentence_subset=False)
    cfg = dataclasses.replace(cfg, prompt_prob=1.0, text=text)
    torch.manual_seed(0)
    model = build_model(cfg, pretrained_text=False)
    save_checkpoint(path, Checkpoint(model.state_dict(), cfg, tok.to_str()))
    return path


def _args(init: Path, out: Path, *extra: str) -> list[str]:
    return ["--config", "tiny", "--init", str(init), "--phantom", "24", "--steps", str(STEPS),
            "--batch-size", str(BATCH), "--lr", "2e-3", "--warmup-steps", "1", "--val-phantom",
            "0", "--save-every", "2", "--keep-checkpoints", "--no-progress", "--out", str(out),
            *extra]  # fmt: skip


def _log(out: Path) -> dict[int, dict[str, float]]:
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "total" in r}


def _key_bias(name: str, t: torch.Tensor) -> torch.Tensor:
    """True on attention key biases: their exact gradient is 0 (softmax ignores a shift), so
    Adam turns float rounding there into lr-sized steps that differ between any two runs."""
    mask = torch.zeros_like(t, dtype=torch.bool)
    if name.endswith(("k.bias", "key.bias")):
        mask[:] = True
    elif name.endswith(("qkv.bias", "c_attn.bias")):
        d = t.shape[0] // 3
        mask[d : 2 * d] = True
    return mask


def _assert_same_weights(a: Checkpoint, b: Checkpoint) -> None:
    assert a.model.keys() == b.model.keys()
    for name, t in a.model.items():
        keep = ~_key_bias(name, t)
        torch.testing.assert_close(b.model[name][keep], t[keep], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.usefixtures("pinned")
def test_two_processes_equal_one_and_resume_on_one(tmp_path: Path) -> None:
    init = _init_checkpoint(tmp_path / "init.pt")
    ref, ddp, resumed = tmp_path / "ref", tmp_path / "ddp", tmp_path / "resumed"
    _train(_args(init, ref))  # one process, global batch 4
    _spawn(2, _train, _args(init, ddp))  # two processes x 2
    last_ref, last_ddp = load_checkpoint(ref / "last.pt"), load_checkpoint(ddp / "last.pt")
    assert last_ddp.state.step == last_ref.state.step == STEPS
    assert last_ddp.state.images == STEPS * BATCH
    assert last_ddp.rng is not None and len(last_ddp.rng["ranks"]) == 2
    log_ref, log_ddp = _log(ref), _log(ddp)
    for step in range(1, STEPS + 1):  # the global-batch losses (L_cl, L_ac gathered) agree
        for k in ("total", "cl", "ac", "lm", "ir", "ar", "cls", "lr"):
            assert log_ddp[step][k] == pytest.approx(log_ref[step][k], rel=1e-5), (step, k)
    _assert_same_weights(last_ref, last_ddp)
    before = torch.load(init, weights_only=True)["model"]["vit.blocks.0.attn.qkv.weight"]
    assert not torch.allclose(last_ddp.model["vit.blocks.0.attn.qkv.weight"], before)

    # the step-2 checkpoint of the 2-process run continues on one process
    _train(_args(init, resumed, "--resume", str(ddp / "step-000002.pt")))
    last_res = load_checkpoint(resumed / "last.pt")
    assert last_res.state.step == STEPS and last_res.state.images == STEPS * BATCH
    assert list(_log(resumed)) == [STEPS]
    assert _log(resumed)[STEPS]["lr"] == log_ref[STEPS]["lr"]  # the schedule went on
    assert _log(resumed)[STEPS]["total"] == pytest.approx(log_ref[STEPS]["total"], rel=1e-5)
    _assert_same_weights(last_ref, last_res)


def _batch_losses(cl_rows: slice, ac_rows: slice) -> dict[str, torch.Tensor]:
    """L_cl and L_ac of some rows of a fixed batch of 6, and their gradients."""
    g = torch.Generator().manual_seed(3)
    img, txt = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    pos, leaf = torch.randn(6, 1, generator=g), torch.randn(6, 25, 8, generator=g)
    has = torch.tensor([1, 1, 0, 1, 1, 1], dtype=torch.bool)
    out: dict[str, torch.Tensor] = {}
    for name, rows in (("cl", cl_rows), ("ac", ac_rows)):
        tpar = torch.tensor(5.0, requires_grad=True)
        x = (img if name == "cl" else leaf)[rows].clone().requires_grad_()
        if name == "cl":
            loss = L.contrastive_loss(x, txt[rows], pos[rows], tpar)
        else:
            loss = L.anatomical_consistency_loss(x, txt[rows], has[rows], tpar)
        loss.backward()  # type: ignore[no-untyped-call]
        assert x.grad is not None and tpar.grad is not None
        out |= {name: loss.detach(), f"{name}_x": x.grad, f"{name}_tpar": tpar.grad}
    return out


def _gathered_losses() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    ref = _batch_losses(slice(0, 6), slice(0, 6))
    cl_rows = slice(0, 4) if rank == 0 else slice(4, 6)  # uneven: rows with a report vary
    ac_rows = slice(3 * rank, 3 * rank + 3)
    with gather.global_batch(gather.BatchGroup(world, rank)):
        got = _batch_losses(cl_rows, ac_rows)
    torch.testing.assert_close(got["cl"], ref["cl"])  # every rank: the global-batch L_cl
    torch.testing.assert_close(got["cl_tpar"], ref["cl_tpar"])
    means = torch.stack([got["ac"], got["ac_tpar"]])
    dist.all_reduce(means)
    torch.testing.assert_close(means / world, torch.stack([ref["ac"], ref["ac_tpar"]]))
    # the local slice's gradient, averaged over ranks by DDP, is the single-process gradient
    torch.testing.assert_close(got["cl_x"] / world, ref["cl_x"][cl_rows])
    torch.testing.assert_close(got["ac_x"] / world, ref["ac_x"][ac_rows])
    dist.destroy_process_group()


@pytest.mark.usefixtures("pinned")
def test_gathered_losses_equal_the_single_process_batch() -> None:
    _spawn(2, _gathered_losses)
