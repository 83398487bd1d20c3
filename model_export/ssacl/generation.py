"""PyTorch reference decoding with the explicit KV cache: greedy and beam search (§2.5).

Follows HF ``generate`` as the release calls it (beam 3, repetition penalty 2.0, length
penalty 2.0, EOS stop): the repetition penalty divides positive / multiplies negative scores of
tokens already *generated* (the prompt is not penalised: the release passes the prefix and
prompt as ``inputs_embeds``); greedy applies it to logits, beam search to log-probabilities
(as HF does). A finished beam scores sum(log p) / L ** length_penalty with L the number of
generated tokens before [EOS]; ``min_length`` counts generated tokens. Returned token ids
exclude [EOS] and padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from model_export.ssacl.config import DecoderConfig
from model_export.ssacl.decoder import ReportDecoder


@dataclass(frozen=True)
class GenerationConfig:
    """Decoding options."""

    max_new_tokens: int = 100  # report length cap in decoder tokens (release max_length 100)
    num_beams: int = 1  # 1 = greedy; the release uses 3
    min_length: int = 0  # [EOS] forbidden before this many tokens (release: 80 GPT-2 tokens)
    repetition_penalty: float = 2.0  # > 1 discourages repeats; 1.0 = off (release 2.0)
    length_penalty: float = 2.0  # beam score exponent on length (release 2.0)


@dataclass
class Prefill:
    """Inputs of the first decoder call: visual prefix + left-padded [BOS] prompt [SEP]."""

    input_ids: Tensor  # (B, T) left-padded prompt tokens
    attention_mask: Tensor  # (B, P + T) prefix mask then text mask
    position_ids: Tensor  # (B, P + T)
    next_pos: Tensor  # (B,) position of the first generated token


def build_prefill(prefix_mask: Tensor, prompts: list[list[int]], pad_id: int) -> Prefill:
    """Left-pad ``prompts`` so every row ends on its last prompt token; positions skip pads."""
    b, p = prefix_mask.shape
    width = max(len(x) for x in prompts)
    ids = torch.full((b, width), pad_id, dtype=torch.long, device=prefix_mask.device)
    text_mask = torch.zeros(b, width, dtype=torch.long, device=prefix_mask.device)
    for i, row in enumerate(prompts):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        text_mask[i, width - len(row) :] = 1
    text_pos = (p + text_mask.cumsum(1) - 1).clamp_min(p)
    pos = torch.cat([torch.arange(p, device=ids.device).expand(b, -1), text_pos], dim=1)
    mask = torch.cat([prefix_mask.long(), text_mask], dim=1)
    return Prefill(ids, mask, pos, p + text_mask.sum(1))


def repetition_penalty(scores: Tensor, generated: Tensor, penalty: float) -> Tensor:
    """scores (N, V); generated (N, t) ids. Positive scores / penalty, negative * penalty."""
    if penalty == 1.0 or generated.shape[1] == 0:
        return scores
    picked = scores.gather(1, generated)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return scores.scatter(1, generated, picked)


def _forbid_eos(scores: Tensor, step: int, cfg: GenerationConfig, eos_id: int) -> Tensor:
    if step < cfg.min_length:
        scores = scores.clone()
        scores[:, eos_id] = float("-inf")
    return scores


def _strip(row: list[int], eos_id: int, pad_id: int) -> list[int]:
    if eos_id in row:
        row = row[: row.index(eos_id)]
    return [t for t in row if t != pad_id]


@torch.no_grad()
def greedy_search(
    decoder: ReportDecoder,
    prefix: Tensor,
    prefix_mask: Tensor,
    prompts: list[list[int]],
    cfg: GenerationConfig,
    use_cache: bool = True,
) -> list[list[int]]:
    """Greedy decoding. ``use_cache=False`` recomputes the whole sequence at every step."""
    dc = decoder.cfg
    pf = build_prefill(prefix_mask, prompts, dc.pad_id)
    logits, kv = decoder(prefix, pf.input_ids, pf.attention_mask, None, pf.position_ids)
    b = prefix.shape[0]
    gen = torch.zeros(b, 0, dtype=torch.long, device=prefix.device)
    mask, pos, next_pos = pf.attention_mask, pf.position_ids, pf.next_pos.clone()
    finished = torch.zeros(b, dtype=torch.bool, device=prefix.device)
    for step in range(cfg.max_new_tokens):
        scores = repetition_penalty(logits[:, -1].float(), gen, cfg.repetition_penalty)
        tok = _forbid_eos(scores, step, cfg, dc.eos_id).argmax(dim=-1)
        tok = torch.where(finished, torch.full_like(tok, dc.pad_id), tok)
        gen = torch.cat([gen, tok[:, None]], dim=1)
        finished |= tok == dc.eos_id
        if bool(finished.all()) or step == cfg.max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(tok)[:, None]], dim=1)
        pos = torch.cat([pos, next_pos[:, None]], dim=1)
        if use_cache:
            logits, kv = decoder(None, tok[:, None], mask, kv, next_pos[:, None])
        else:
            ids = torch.cat([pf.input_ids, gen], dim=1)
            logits, _ = decoder(prefix, ids, mask, None, pos)
        next_pos = next_pos + 1
    return [_strip(r, dc.eos_id, dc.pad_id) for r in gen.tolist()]


@dataclass
class _Hyps:
    """Finished hypotheses of one sample (at most ``num_beams``), best kept."""

    size: int
    items: list[tuple[float, list[int]]]

    def add(self, score: float, tokens: list[int]) -> None:
        self.items.append((score, tokens))
        self.items.sort(key=lambda x: -x[0])
        del self.items[self.size :]

    def done(self, best_running: float, cur_len: int, lp: float) -> bool:
        """HF ``early_stopping=False``: no running beam can beat the worst kept one."""
        full = len(self.items) >= self.size
        return full and self.items[-1][0] >= best_running / max(cur_len, 1) ** lp


@torch.no_grad()
def beam_search(
    decoder: ReportDecoder,
    prefix: Tensor,
    prefix_mask: Tensor,
    prompts: list[list[int]],
    cfg: GenerationConfig,
) -> list[list[int]]:
    """Beam search with the KV cache reordered by beam index at every step."""
    dc, k = decoder.cfg, cfg.num_beams
    pf = build_prefill(prefix_mask, prompts, dc.pad_id)
    logits, kv = decoder(prefix, pf.input_ids, pf.attention_mask, None, pf.position_ids)
    b = prefix.shape[0]
    kv = kv.repeat_interleave(k, dim=1)
    mask = pf.attention_mask.repeat_interleave(k, dim=0)
    next_pos = pf.next_pos.repeat_interleave(k, dim=0)
    last = logits[:, -1].float().repeat_interleave(k, dim=0)  # (B*K, V)
    beam_scores = torch.zeros(b, k, device=prefix.device)
    beam_scores[:, 1:] = -1e9  # first step: expand beam 0 only
    beam_scores = beam_scores.reshape(-1)
    seqs = torch.zeros(b * k, 0, dtype=torch.long, device=prefix.device)
    hyps = [_Hyps(k, []) for _ in range(b)]
    done = [False] * b
    for step in range(cfg.max_new_tokens):
        logp = torch.log_softmax(last, dim=-1)
        logp = repetition_penalty(logp, seqs, cfg.repetition_penalty)
        logp = _forbid_eos(logp, step, cfg, dc.eos_id)
        cand = (logp + beam_scores[:, None]).reshape(b, -1)  # (B, K*V)
        top, idx = cand.topk(2 * k, dim=1)
        sel = _select(top.tolist(), idx.tolist(), seqs, hyps, done, step, cfg, dc)
        scores, tokens, src = (torch.tensor(x, device=prefix.device) for x in sel)
        beam_scores = scores.float()
        seqs = torch.cat([seqs[src], tokens[:, None]], dim=1)
        if all(done) or step == cfg.max_new_tokens - 1:
            break
        kv = kv.index_select(1, src)
        mask = torch.cat([mask[src], torch.ones_like(tokens)[:, None]], dim=1)
        next_pos = next_pos[src]
        logits, kv = decoder(None, tokens[:, None], mask, kv, next_pos[:, None])
        next_pos = next_pos + 1
        last = logits[:, -1].float()
    for i in range(b):
        if not done[i]:  # finalise: running beams compete with the finished ones
            for j in range(i * k, (i + 1) * k):
                row = seqs[j].tolist()
                hyps[i].add(float(beam_scores[j]) / max(len(row), 1) ** cfg.length_penalty, row)
    return [_strip(h.items[0][1], dc.eos_id, dc.pad_id) for h in hyps]


def _select(
    top: list[list[float]],
    idx: list[list[int]],
    seqs: Tensor,
    hyps: list[_Hyps],
    done: list[bool],
    step: int,
    cfg: GenerationConfig,
    dc: DecoderConfig,
) -> tuple[list[float], list[int], list[int]]:
    """Pick the next K beams per sample from its 2K candidates; move EOS ones to ``hyps``."""
    k, eos_id, pad_id = cfg.num_beams, dc.eos_id, dc.pad_id
    scores: list[float] = []
    tokens: list[int] = []
    src: list[int] = []
    for i in range(len(hyps)):
        if done[i]:
            scores += [0.0] * k
            tokens += [pad_id] * k
            src += [i * k] * k
            continue
        picked = 0
        for rank, (score, flat) in enumerate(zip(top[i], idx[i], strict=True)):
            beam, tok = divmod(flat, dc.vocab_size)
            if tok == eos_id:
                if rank < k:
                    row = seqs[i * k + beam].tolist()
                    hyps[i].add(score / max(len(row), 1) ** cfg.length_penalty, row)
                continue
            scores.append(score)
            tokens.append(tok)
            src.append(i * k + beam)
            picked += 1
            if picked == k:
                break
        done[i] = hyps[i].done(max(top[i]), step + 1, cfg.length_penalty)
    return scores, tokens, src


def generate_ids(
    decoder: ReportDecoder,
    prefix: Tensor,
    prefix_mask: Tensor,
    prompts: list[list[int]],
    cfg: GenerationConfig,
) -> list[list[int]]:
    """Greedy when ``cfg.num_beams == 1``, else beam search."""
    if cfg.num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {cfg.num_beams}")
    if cfg.num_beams == 1:
        return greedy_search(decoder, prefix, prefix_mask, prompts, cfg)
    return beam_search(decoder, prefix, prefix_mask, prompts, cfg)
