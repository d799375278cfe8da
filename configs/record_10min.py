"""record_10min: the lowest whole-split validation loss this 2-core CPU reaches within 10 minutes.

    python -m launch.train --config=configs/record_10min.py

Target: below 1.40 nats/byte on Tiny Shakespeare's whole validation split within 10 minutes of wall time,
start to exit (nanoGPT's GPU recipe reports 1.4697 after about 3 minutes on an A100). What it reaches is
in BENCHMARKS.md, "Model families" (`python -m launch.benchmark --only=families`).

gpt2_speedrun's model and optimizer (4 layers of width 128: rotary positions, RMSNorm, QK-norm, ReLU², no
biases; Muon on the hidden matrices, warmup-stable-decay) on windows of 256 bytes, for as many steps as fit
the budget at the rate record_2min measured on 2026-12-07 (0.41 s a step, ~10 s around them): 1300 steps,
about 545 s, with a margin for this shared machine's drift (1850 steps, sized at 2026-12-06's 0.31 s a
step, took 706 s on 2026-12-07 with ten evaluations along the way). No dropout: with residual dropout
0.1 (nanoGPT's character recipe uses 0.2) 2200 steps reached 1.514 here (seed 0, whole processes,
2026-12-06), short of the 1.463 the same model reached without it after 2400 steps; at this budget the
model is still learning more than it overfits. No training on validation bytes; the run evaluates 64
windows at step 0 and the whole split at the end.
"""

from pathlib import Path

import ml_collections

from bytelm import config_base


def get_config() -> ml_collections.ConfigDict:
    config = config_base.load_config_file(Path(__file__).with_name("gpt2_speedrun.py"))  # model and optimizer
    config.name = "record_10min"
    config.model.seq_len = 256
    config.data.eval_windows = 64  # (and the whole validation split, once, at the end)
    config.train.steps = 1300
    config.train.eval_every = 1300  # the final evaluation only
    return config
