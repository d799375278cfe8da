"""record_2min: the fastest recipe found towards a whole-split validation loss of 1.47 on this 2-core CPU.

    python -m launch.train --config=configs/record_2min.py

Target: 1.47 nats/byte or less on Tiny Shakespeare's whole validation split (nanoGPT's A100 figure) within
2 minutes of wall time, start to exit, with a warm compilation cache. What it reaches is in BENCHMARKS.md,
"Model families" (`python -m launch.benchmark --only=families`).

gpt2_speedrun's model and optimizer (4 layers of width 128: rotary positions, RMSNorm, QK-norm, ReLU², no
biases; Muon on the hidden matrices, warmup-stable-decay) on windows of 256 bytes, for as many steps as
fit the budget at this machine's measured ~12,000 tokens/s for a model of this kind at that window
(BENCHMARKS.md, Mamba-2). How the settings were chosen: gpt2_speedrun's ablation for the levers, the
window of 256 from its measured 1.463 after 2400 steps there, the step count from the budget; no
dropout (in 2 minutes the model sees the corpus about once). No training on validation bytes; the run evaluates
64 windows at step 0 and the whole split at the end (the families benchmark evaluates along the way).
"""

import ml_collections

from bytelm import config_base


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "record_2min"

    config.model = config_base.model_config(
        "gpt2",
        num_layers=4,
        num_heads=4,
        head_dim=32,
        ffn_hidden=512,
        seq_len=256,
        positions="rope",
        norm="rmsnorm",
        activation="relu2",
        qk_norm=True,
        biases=False,
    )

    config.data = config_base.data_config()
    config.data.final_eval_windows = 0  # the whole validation split, once, at the end
    config.data.eval_windows = 64

    config.train = config_base.train_config()
    config.train.steps = 480
    config.train.batch_size = 12
    config.train.optimizer = "muon"
    config.train.muon_lr = 0.03
    config.train.lr = 3e-3
    config.train.min_lr = 3e-5
    config.train.warmup_steps = 20
    config.train.schedule = "wsd"
    config.train.decay_fraction = 0.4
    config.train.eval_every = 480  # the final evaluation only
    config.train.checkpoint_every = 0

    config.sample = config_base.sample_config()
    config.runtime = config_base.runtime_config()
    return config
