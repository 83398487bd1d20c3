from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from model_export.data.collate import Collator
from model_export.data.records import TrainSample
from model_export.ssacl import anatomy
from model_export.ssacl.batch import TrainBatch
from model_export.ssacl.config import SSACLConfig
from model_export.ssacl.generation import GenerationConfig
from model_export.ssacl.model import SSACLModel, build_model

REPORTS = {
    "Cardiomegaly": "The heart is enlarged. No pneumothorax.",
    "Pleural Effusion": "There is a small right pleural effusion. The heart is normal.",
    "No Finding": "The lungs are clear. No pleural effusion.",
}


def _synthetic(n: int, seed: int, folder_every: int = 4) -> list[TrainSample]:
    """Label-dependent synthetic images (bright blob position) with template reports."""
    rng = np.random.default_rng(seed)
    names = list(REPORTS)
    out = []
    for i in range(n):
        k = int(rng.integers(len(names)))
        img = rng.normal(0.4, 0.05, (32, 32)).astype(np.float32)
        img[4 + 8 * k : 12 + 8 * k, 8:24] += 0.5
        labels = tuple(1.0 if c == names[k] else 0.0 for c in anatomy.CHEXPERT_LABELS)
        report = None if i % folder_every == folder_every - 1 else REPORTS[names[k]]
        out.append(TrainSample(np.clip(img, 0, 1), report, labels, (1.0,) * 14, "syn", str(i)))
    return out


@pytest.fixture()
def model(tiny_cfg: SSACLConfig) -> SSACLModel:
    torch.manual_seed(0)
    return build_model(tiny_cfg)


@pytest.fixture()
def batch(tiny_cfg: SSACLConfig, decoder_tokenizer: Tokenizer) -> TrainBatch:
    return Collator(tiny_cfg, decoder_tokenizer, seed=0)(_synthetic(8, 0))


@torch.no_grad()
def test_encode_image_shapes(model: SSACLModel, tiny_cfg: SSACLConfig) -> None:
    enc = model.eval().encode_image(torch.randn(2, 1, 32, 32))
    g, d = tiny_cfg.vision.grid, tiny_cfg.vision.dim
    assert enc.patch_tokens.shape == (2, g * g, d)
    assert enc.node_tokens.shape == (2, 32, d) and enc.leaf_tokens.shape == (2, 25, d)
    assert enc.cls.shape == (2, d) and enc.pathology_logits.shape == (2, 14)
    assert enc.attn_maps is not None and enc.attn_maps.shape == (2, 32, g, g)
    assert torch.equal(enc.leaf_tokens, enc.node_tokens[:, list(anatomy.LEAF_IDS)])
    prefix, mask = model.visual_prefix(enc.leaf_tokens, enc.cls, enc.patch_tokens,
                                       torch.ones(2, 25, dtype=torch.bool))  # fmt: skip
    assert prefix.shape == (2, tiny_cfg.prefix_len, tiny_cfg.decoder.dim)
    assert mask[:, 25].tolist() == [0, 0] and int(mask.sum()) == 2 * (tiny_cfg.prefix_len - 1)


def test_every_parameter_gets_a_gradient(model: SSACLModel, batch: TrainBatch) -> None:
    g2 = model.cfg.vision.num_patches
    model.anatomy_pool.set_atlas(torch.rand(32, g2))  # a uniform atlas gives beta no gradient
    out = model(batch)
    assert all(torch.isfinite(v) for v in vars(out).values())
    out.total.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == len(list(model.parameters()))  # tiny freezes nothing
    missing = [n for n, p in trainable if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    # the CLS entity head is kept for entity_head="cls" checkpoints; the patch head is in use
    assert model.cfg.entity_head == "patch"
    assert missing == ["entity_head.weight", "entity_head.bias"]


def test_state_dict_round_trip(model: SSACLModel, tiny_cfg: SSACLConfig) -> None:
    again = build_model(tiny_cfg, pretrained_text=False)
    again.load_state_dict(model.state_dict())  # strict: same keys, same shapes
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        a, b = model.eval().encode_image(x), again.eval().encode_image(x)
    assert torch.equal(a.pathology_logits, b.pathology_logits)


def test_no_report_batch(model: SSACLModel, tiny_cfg: SSACLConfig, decoder_tokenizer: Tokenizer
                         ) -> None:  # fmt: skip
    batch = Collator(tiny_cfg, decoder_tokenizer)(_synthetic(4, 1, folder_every=1))
    out = model(batch)
    vals = out.as_dict()
    assert vals["lm"] == 0.0 and vals["cl"] == 0.0
    assert vals["ir"] > 0 and vals["ar"] > 0 and vals["ac"] > 0
    out.total.backward()


def test_total_loss_falls(tiny_cfg: SSACLConfig, decoder_tokenizer: Tokenizer) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_cfg)
    collate = Collator(tiny_cfg, decoder_tokenizer, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    totals = []
    for step in range(40):
        out = model(collate(_synthetic(8, step)))
        opt.zero_grad()
        out.total.backward()
        opt.step()
        totals.append(float(out.total.detach()))
    first, last = np.mean(totals[:5]), np.mean(totals[-5:])
    assert last < 0.8 * first, (first, last)


@torch.no_grad()
def test_generate(model: SSACLModel, decoder_tokenizer: Tokenizer) -> None:
    model.eval()
    images = torch.randn(2, 1, 32, 32)
    out = model.generate(images, decoder_tokenizer, GenerationConfig(max_new_tokens=6))
    assert len(out) == 2 and all(len(r.token_ids) <= 6 for r in out)
    assert all(len(r.entity_probs) == 14 and isinstance(r.text, str) for r in out)
    beam = GenerationConfig(max_new_tokens=4, num_beams=2)
    forced = model.generate(images, decoder_tokenizer, beam, entities=[("Cardiomegaly",), ()])
    assert forced[0].candidates == ("mediastinum",) and forced[1].candidates == anatomy.ROOT_NAMES


def test_region_alignment_loss_trains_the_queries(
    tiny_cfg: SSACLConfig, decoder_tokenizer: Tokenizer
) -> None:
    import dataclasses

    cfg = dataclasses.replace(
        tiny_cfg, loss_weights=dataclasses.replace(tiny_cfg.loss_weights, align=1.0)
    )
    torch.manual_seed(0)
    m = build_model(cfg)
    b = Collator(cfg, decoder_tokenizer, seed=0)(_synthetic(8, 0))
    assert b.sent_ids.shape[0] > 0
    out = m(b)
    assert out.align.item() > 0
    out.total.backward()
    grad = m.vit.blocks[-1].attn.qkv.weight.grad  # the attention that places the queries
    assert grad is not None and grad.abs().sum() > 0
