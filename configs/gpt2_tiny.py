"""gpt2_tiny: a 0.83M-parameter GPT-2 over bytes, trained on Tiny Shakespeare on a CPU.

    python -m launch.download_data --tiny_shakespeare
    python -m launch.train --config=configs/gpt2_tiny.py

The widely used CPU recipe for Tiny Shakespeare (4 layers, 4 heads, width 128, seq 64, batch 12,
AdamW 1e-3 with 100 warm-up steps and cosine decay to 1e-4 over 2000 steps), so results compare
with published ones. Measured figures for this config are in README.md.
"""

import ml_collections

from bytelm import config_base


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "gpt2_tiny"

    # GPT-2 exactly: learned positions, LayerNorm, GELU, biases, a tied head (the family's defaults).
    config.model = config_base.model_config(
        "gpt2",
        num_layers=4,
        num_heads=4,
        head_dim=32,  # width = num_heads × head_dim = 128
        ffn_hidden=512,
        seq_len=64,
    )

    config.data = config_base.data_config()
    config.train = config_base.train_config()
    config.sample = config_base.sample_config()
    config.runtime = config_base.runtime_config()
    return config
