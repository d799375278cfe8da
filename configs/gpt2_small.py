"""gpt2_small: GPT-2 small's shape over bytes (12 layers, 12 heads, width 768, seq 1024), for GPUs.

    python -m launch.train --config=configs/gpt2_small.py

86M parameters at the byte vocabulary (GPT-2 small's 124M is mostly its 50,257-token embedding).
Tiny Shakespeare is far too small for it to do more than memorise; the config is here to measure
throughput and MFU on an accelerator, and as the starting point for a real corpus
(--config.data.file=...). On this repository's 2-core CPU one step takes minutes.
"""

import ml_collections

from bytelm import config_base


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "gpt2_small"

    # GPT-2 exactly: learned positions, LayerNorm, GELU, biases, a tied head (the family's defaults).
    config.model = config_base.model_config(
        "gpt2",
        num_layers=12,
        num_heads=12,
        head_dim=64,  # width = num_heads × head_dim = 768
        ffn_hidden=3072,
        seq_len=1024,
    )

    config.data = config_base.data_config()
    config.data.eval_windows = 64  # 64 × 1024 bytes per periodic evaluation
    config.train = config_base.train_config()
    # nanoGPT's GPT-2 small recipe, scaled to one GPU: 16 × 1024 bytes per step, lr 6e-4 to 6e-5.
    config.train.batch_size = 16
    config.train.eval_batch_size = 16
    config.train.lr = 6e-4
    config.train.min_lr = 6e-5
    config.train.warmup_steps = 200
    config.sample = config_base.sample_config()
    config.runtime = config_base.runtime_config()
    return config
