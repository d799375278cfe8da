"""record_2min: the fastest recipe found towards a whole-split validation loss of 1.47 on this 2-core CPU.

    python -m launch.train --config=configs/record_2min.py

Target: 1.47 nats/byte or less on Tiny Shakespeare's whole validation split (nanoGPT's A100 figure) within
2 minutes of wall time, start to exit, with a warm compilation cache. What it reaches is in BENCHMARKS.md,
"Model families" and "Records, as configured" (`python -m launch.benchmark --only=families,records`).

record_10min's recipe (mamba2_tiny's model under gpt2_speedrun's Muon, windows of 256 bytes) for 320
steps, with a cosine schedule in place of warmup-stable-decay: on 2026-12-07 they took 100-129 s as
configured from a warm compilation cache, over two measurements of two seeds (8,400-10,800 tokens/s: the
shared machine's spread, which is larger than the 1.17x of Mamba-2's faster step between them), and
121 s from a cold start with four whole-split evaluations along the way. How it was chosen, by
measurement (whole processes, cold, 2026-12-07): with seed 0, interleaved, 1.6396 in 115 s against 1.6998
in 100 s for this record's earlier form (gpt2_speedrun's levers with GELU on batches of 48 windows of 64
bytes, 260 steps, itself chosen by an ablation of the form before it; its table is in BENCHMARKS.md's
archive of 2026-12-07); then this record's ablation with warmup-stable-decay found cosine 0.009 lower in
both seeds (1.6207 against 1.6299 on average; BENCHMARKS.md as of commit 6c5ae5b), so at 320 steps the
schedule decays from the start.
No training on validation bytes; the run evaluates 64 windows at step 0 and the whole split at the end
(the families benchmark evaluates along the way).
"""

from pathlib import Path

import ml_collections

from bytelm import config_base


def get_config() -> ml_collections.ConfigDict:
    config = config_base.load_config_file(Path(__file__).with_name("record_10min.py"))  # the recipe
    config.name = "record_2min"
    config.train.steps = 320
    config.train.schedule = "cosine"  # warm-up, then a cosine to min_lr (the ablation's choice at 320 steps)
    config.train.eval_every = 320  # the final evaluation only
    return config
