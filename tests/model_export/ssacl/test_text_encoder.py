from __future__ import annotations

import torch

from model_export.ssacl import anatomy
from model_export.ssacl.config import TextConfig
from model_export.ssacl.text_encoder import TextEncoder, minilm_tokenizer, tokenize


def test_tokenize_truncates_keeping_sep() -> None:
    ids, mask = tokenize(["a b c d e f g h", "lungs"], 5)
    sep = minilm_tokenizer().token_to_id("[SEP]")
    assert ids.shape == (2, 5) and int(ids[0, -1]) == sep
    assert mask[1].tolist() == [1, 1, 1, 0, 0] and int(ids[1, 2]) == sep


def test_minilm_loads_frozen_and_pools() -> None:
    enc = TextEncoder(TextConfig(frozen_layers=4, pooling="mean")).train()
    frozen = [n for n, p in enc.named_parameters() if not p.requires_grad]
    assert any(n.startswith("bert.embeddings") for n in frozen)
    assert any(".layer.3." in n for n in frozen) and not any(".layer.4." in n for n in frozen)
    assert not enc.bert.encoder.layer[0].training and enc.bert.encoder.layer[5].training
    assert enc.bert.pooler is None  # mean pooling builds no pooler
    ids, mask = tokenize(anatomy.LEAF_NAMES, 16)
    with torch.no_grad():
        out = enc.eval()(ids, mask)
    assert out.shape == (25, 384)
    z = torch.nn.functional.normalize(out, dim=-1)
    off = (z @ z.t())[~torch.eye(25, dtype=torch.bool)]
    assert float(off.mean()) < 0.5  # pretrained weights: the leaf names are told apart
    left, right = anatomy.leaf_index("left clavicle"), anatomy.leaf_index("right clavicle")
    spine = anatomy.leaf_index("spine")
    assert float(z[left] @ z[right]) > float(z[left] @ z[spine])


def test_pooler_mode_and_padding_invariance() -> None:
    torch.manual_seed(0)
    cfg = TextConfig(source="random", hidden=32, layers=2, heads=2, intermediate=64,
                     max_positions=64, frozen_layers=0, pooling="pooler")  # fmt: skip
    enc = TextEncoder(cfg).eval()
    ids, mask = tokenize(["no pneumothorax"], 16)
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    pmask = torch.cat([mask, torch.zeros(1, 3, dtype=torch.long)], 1)
    with torch.no_grad():
        a, b = enc(ids, mask), enc(padded, pmask)
    assert a.shape == (1, 32) and torch.allclose(a, b, atol=1e-5)
    assert float(a.abs().max()) <= 1.0  # tanh pooler
