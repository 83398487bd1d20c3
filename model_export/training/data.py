"""Training data of a run: the decoder tokenizer, the sources and their per-rank loaders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from model_export.data import readers, shards
from model_export.data.augment import Augmenter
from model_export.data.collate import Collator
from model_export.data.pipeline import (
    FolderSource,
    MixedDataset,
    PhantomSource,
    Source,
    StudySource,
    phantom_seeds,
    seed_worker,
)
from model_export.data.records import TrainSample
from model_export.data.tokenizer import train_report_tokenizer
from model_export.ssacl.batch import TrainBatch
from model_export.ssacl.config import SSACLConfig
from model_export.training.distributed import DistInfo, GlobalBatchSampler, per_rank_batch
from model_export.training.options import TrainOptions

#: Shard reports read for the decoder tokenizer of a fresh ``--shards`` run.
TOKENIZER_SHARD_REPORTS = 20000


def build_tokenizer(opts: TrainOptions, size: int, sources: Sequence[Source]) -> Tokenizer:
    """Train the decoder WordPiece on phantom reports, the entity prompts, the reports of the
    report sources (MIMIC-CXR / IU X-ray train split, shards) and the IU XML reports."""
    from model_export.ssacl.entities import prompt_corpus

    src = PhantomSource(phantom_seeds("train", opts.tokenizer_phantoms), size)
    texts = [str(src.phantom(i).report) for i in range(len(src))] + prompt_corpus()
    texts += [st.report for s in sources if isinstance(s, StudySource) for st in s.studies]
    if opts.shards:
        texts += shards.report_texts(shards.expand_urls(opts.shards), TOKENIZER_SHARD_REPORTS)
    if opts.iu_reports:
        from model_export.data.iu_xml import read_iu_xml

        texts += [s.report for s in read_iu_xml(Path(opts.iu_reports)) if s.report.strip()]
    return train_report_tokenizer(texts, vocab_size=opts.vocab_size)


def build_sources(
    opts: TrainOptions, size: int, with_masks: bool = False
) -> tuple[list[Source], list[float]]:
    """Map-style training sources and their mixing weights (image side ``size`` px); phantoms
    carry their node masks when ``with_masks`` (synthetic supervision). Empty for shards."""
    sources: list[Source] = []
    weights: list[float] = []
    if opts.phantom:
        seeds = phantom_seeds("train", opts.phantom)
        sources.append(PhantomSource(seeds, size, with_masks=with_masks))
        weights.append(opts.phantom_weight)
    if opts.folder:
        studies = readers.read_image_folder(Path(opts.folder))
        sources.append(FolderSource(readers.held_out_split(studies, "train"), size))
        weights.append(opts.folder_weight)
    for root, read, name, weight in (
        (opts.mimic, readers.read_mimic, "mimic-cxr", opts.mimic_weight),
        (opts.iu, readers.read_iu_r2gen, "iu-xray", opts.iu_weight),
    ):
        if root:
            studies = [s for s in read(Path(root)) if s.split == "train"]
            sources.append(StudySource(studies, size, name))
            weights.append(weight)
    if opts.shards and sources:
        raise ValueError(
            "--shards is the only training source of a run: pass --phantom 0 and no "
            "--folder / --mimic / --iu (convert them with make_shards)"
        )
    if not sources and not opts.shards:
        raise ValueError("no training data: give --phantom N, --folder, --mimic, --iu or --shards")
    return sources, weights


@dataclass
class TrainData:
    """The training stream: a mixed map-style dataset or tar shards, and the epoch length."""

    dataset: MixedDataset | shards.ShardDataset
    steps_per_epoch: int  # optimizer steps per epoch (the same for any number of processes)


def build_data(
    opts: TrainOptions, size: int, sources: Sequence[Source], weights: Sequence[float],
    info: DistInfo,
) -> TrainData:  # fmt: skip
    """Mixed sources (epoch = their total size) or shards (epoch = their sample count)."""
    per_step = opts.batch_size * opts.accum
    augment = Augmenter() if opts.augment else None
    if opts.shards:
        paths = shards.expand_urls(opts.shards)
        per_epoch = max(1, shards.count_samples(paths) // per_step)
        ds = shards.ShardDataset(paths, size, opts.seed, info.rank, info.world_size, augment,
                                 repeat=True)  # fmt: skip
        return TrainData(ds, per_epoch)
    per_epoch = max(1, sum(len(s) for s in sources) // per_step)
    mixed = MixedDataset(sources, weights, per_epoch * per_step, opts.seed, transform=augment)
    return TrainData(mixed, per_epoch)


def make_loader(
    data: TrainData, collate: Collator, opts: TrainOptions, info: DistInfo, epoch: int,
    epoch_step: int, device: torch.device,
) -> DataLoader[TrainSample]:  # fmt: skip
    """This rank's micro-batches of ``epoch`` from optimizer step ``epoch_step`` (resume)."""
    local = per_rank_batch(opts.batch_size, info.world_size)
    ds = data.dataset
    sampler = None
    if isinstance(ds, MixedDataset):
        ds.set_epoch(epoch)
        start = epoch_step * opts.batch_size * opts.accum
        sampler = GlobalBatchSampler(len(ds), opts.batch_size, info, start)
    else:  # resumes at the same batch of each worker's stream (sample-exact: map-style only)
        ds.set_epoch(epoch, skip_batches=epoch_step * opts.accum, batch_size=local)
    return DataLoader(
        ds,
        batch_size=local,
        sampler=sampler,
        drop_last=True,
        num_workers=opts.workers,
        collate_fn=collate,
        worker_init_fn=seed_worker,
        # own generator: creating an iterator must not draw from the global torch RNG (resume)
        generator=torch.Generator().manual_seed(opts.seed + info.rank),
        pin_memory=device.type == "cuda",
    )


def val_batches(opts: TrainOptions, cfg: SSACLConfig, tokenizer: Tokenizer) -> list[TrainBatch]:
    """Validation phantoms (own seed range), collated once with a fixed prompt draw."""
    size = cfg.vision.image_size
    src = PhantomSource(phantom_seeds("val", opts.val_phantom), size, with_masks=True)
    collate = Collator(cfg, tokenizer, seed=opts.seed + 1)
    starts = range(0, len(src), opts.batch_size)
    return [collate([src[i] for i in range(k, min(k + opts.batch_size, len(src)))]) for k in starts]
