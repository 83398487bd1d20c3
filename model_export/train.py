"""Train SS-ACL: ``python -m model_export.train --config small --phantom 20000 --out runs/small``.

One joint stage as released (all losses from step 0): AdamW (0.9, 0.95), weight decay 0.05 except
biases and norms, linear warm-up from 1e-6 then per-iteration cosine to ``--min-lr``, gradient
accumulation, bf16 autocast on CUDA. A fresh run first trains the decoder tokenizer on phantom
(and IU XML) report texts and saves it in the run folder. ``last.pt`` is written atomically every
``--save-every`` steps and at the end; a non-finite loss stops the run and keeps the last good
checkpoint. ``--resume`` continues a run from its checkpoint (model, optimizer, step, data
position), with any number of processes.

Data-parallel: ``torchrun --nproc-per-node N -m model_export.train ...`` (NCCL on GPUs, gloo on
CPU). ``--batch-size`` is the global micro-batch (each process takes 1/N), so the schedule and
the results do not depend on N; rank 0 logs and writes checkpoints. Tar shards from
``python -m model_export.data.make_shards`` train with ``--shards 'dir/{000000..000009}.tar'``.
The code lives in ``model_export.training`` (options, schedule, data, distributed, loop).
"""

from __future__ import annotations

import sys

from model_export.training.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
