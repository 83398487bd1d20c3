from __future__ import annotations

import pytest
import torch

from model_export.ssacl.config import DecoderConfig
from model_export.ssacl.decoder import ReportDecoder

CFG = DecoderConfig(vocab_size=50, dim=16, depth=2, heads=2, max_len=64, prompt_max_len=4,
                    report_max_len=8)  # fmt: skip


@pytest.fixture()
def dec() -> ReportDecoder:
    torch.manual_seed(0)
    return ReportDecoder(CFG).eval()


@torch.no_grad()
def test_shapes_and_tied_head(dec: ReportDecoder) -> None:
    prefix = torch.randn(2, 5, 16)
    ids = torch.randint(0, 50, (2, 3))
    logits, kv = dec(prefix, ids, torch.ones(2, 8, dtype=torch.long))
    assert logits.shape == (2, 3, 50)
    assert kv.shape == (4, 2, 2, 8, 8)  # (2*depth, B, heads, P+T, head_dim)
    assert dec.lm_head.weight is dec.wte.weight


@torch.no_grad()
def test_cached_steps_equal_full_pass(dec: ReportDecoder) -> None:
    prefix = torch.randn(2, 5, 16)
    ids = torch.randint(0, 50, (2, 6))
    mask = torch.ones(2, 11, dtype=torch.long)
    mask[0, 1] = 0  # a hidden prefix token (e.g. a non-candidate leaf)
    full, _ = dec(prefix, ids, mask)
    logits, kv = dec(prefix, ids[:, :2], mask[:, :7])
    steps = [logits]
    for t in range(2, 6):
        pos = torch.full((2, 1), 5 + t)
        logits, kv = dec(None, ids[:, t : t + 1], mask[:, : 6 + t], kv, pos)
        steps.append(logits)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


@torch.no_grad()
def test_prefix_mask_hides_tokens_in_cached_steps(dec: ReportDecoder) -> None:
    prefix = torch.randn(1, 4, 16)
    ids = torch.randint(0, 50, (1, 2))
    mask = torch.tensor([[1, 0, 1, 1, 1, 1]])
    changed = prefix.clone()
    changed[0, 1] += 10.0  # the hidden token's content must not matter
    for p in (prefix, changed):
        _, kv = dec(p, ids[:, :1], mask[:, :5])
        out, _ = dec(None, ids[:, 1:], mask, kv, torch.tensor([[5]]))
        if p is prefix:
            ref = out
    assert torch.allclose(out, ref, atol=1e-5)
    shown = torch.ones_like(mask)
    _, kv = dec(changed, ids[:, :1], shown[:, :5])
    out, _ = dec(None, ids[:, 1:], shown, kv, torch.tensor([[5]]))
    assert not torch.allclose(out, ref, atol=1e-3)  # visible: it does matter


@torch.no_grad()
def test_fully_hidden_rows_stay_finite(dec: ReportDecoder) -> None:
    mask = torch.tensor([[0, 0, 1, 1]])  # first prefix tokens see nothing unmasked
    logits, kv = dec(torch.randn(1, 3, 16), torch.tensor([[3]]), mask)
    assert torch.isfinite(logits).all() and torch.isfinite(kv).all()


@torch.no_grad()
@pytest.mark.parametrize(("items", "k", "generated"), [(2, 3, 4), (3, 1, 0), (1, 2, 1)])
def test_shared_context_step_equals_the_per_row_step(
    dec: ReportDecoder, items: int, k: int, generated: int
) -> None:
    """K rows per context item over one shared context give the logits and generated keys of
    the plain step on the context repeated K times (hidden context keys included; G = 0 is
    the first step after the prefill)."""
    ctx_len, n = 7, items * k
    context = torch.randn(4, items, 2, ctx_len, 8)
    context_mask = torch.ones(items, ctx_len, dtype=torch.long)
    context_mask[0, :2] = 0
    past = torch.randn(4, n, 2, generated, 8)
    ids, pos = torch.randint(0, 50, (n, 1)), torch.full((n, 1), 12)
    logits, present = dec.step_with_context(ids, pos, context, context_mask, past)
    full = torch.cat([context.repeat_interleave(k, dim=1), past], dim=3)
    mask = torch.cat(
        [context_mask.repeat_interleave(k, 0), torch.ones(n, generated + 1, dtype=torch.long)], 1
    )
    want, want_kv = dec(None, ids, mask, full, pos)
    assert present.shape == (4, n, 2, generated + 1, 8)
    torch.testing.assert_close(logits, want[:, -1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(present, want_kv[:, :, :, ctx_len:], atol=1e-5, rtol=1e-5)
