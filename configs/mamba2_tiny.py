"""mamba2_tiny: a Mamba-2 (SSD) byte model on Tiny Shakespeare, on a CPU, at mamba_tiny's size and window.

    python -m launch.download_data --tiny_shakespeare
    python -m launch.train --config=configs/mamba2_tiny.py

d_model 128, 4 layers, expand 2 (E = 256), heads of 32 channels (H = 8), one group, d_state 64, conv
width 4: 505,496 parameters against mamba_tiny's 499,328, trained on windows of 256 bytes with
mamba_tiny's data, train and sample fields. The recurrence runs as SSD's chunked matmuls, chunks of
64 positions (BENCHMARKS.md, Mamba-2: chunk and head sizes as measured).
"""

import ml_collections

from bytelm import config_base


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "mamba2_tiny"

    config.model = config_base.model_config(
        "mamba2",
        d_model=128,
        num_layers=4,
        d_state=64,  # N
        d_conv=4,
        expand=2,  # E = 256
        headdim=32,  # P: H = E / P = 8 heads
        ngroups=1,
        chunk=64,  # Q: positions per SSD chunk
        seq_len=256,  # training window; sampling has no window
    )

    config.data = config_base.data_config()
    config.train = config_base.train_config()
    config.train.lr = 2e-3
    config.sample = config_base.sample_config()
    config.runtime = config_base.runtime_config()
    return config
