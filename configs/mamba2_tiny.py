"""mamba2_tiny: a Mamba-2 (SSD) byte model on Tiny Shakespeare, on a CPU, at mamba_tiny's size and window.

    python -m launch.download_data --tiny_shakespeare
    python -m launch.train --config=configs/mamba2_tiny.py

d_model 128, 4 layers, expand 2 (E = 256), two heads of 128 channels, one group, d_state 16, conv
width 4: 450,840 parameters against mamba_tiny's 499,328, trained on windows of 256 bytes with
mamba_tiny's data, train and sample fields. The recurrence runs as SSD's chunked matmuls in chunks of
16 positions. Head, state and chunk sizes were chosen by measuring: on this CPU the SSD's cost grows
with the heads, the state and the chunk (BENCHMARKS.md, Mamba-2: since SSD's batch and group became one
axis, chunks of 16 to 64 train at the same rate on windows of 256), and of the sizes tried for 600 steps
this one was both the fastest and the best (whole-split validation 1.576 in 191 s; heads of 128 with
d_state 32 and chunks of 32: 1.579 in 223 s).
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
        d_state=16,  # N
        d_conv=4,
        expand=2,  # E = 256
        headdim=128,  # P: H = E / P = 2 heads
        ngroups=1,
        chunk=16,  # Q: positions per SSD chunk
        seq_len=256,  # training window; sampling has no window
    )

    config.data = config_base.data_config()
    config.train = config_base.train_config()
    config.train.lr = 2e-3
    config.sample = config_base.sample_config()
    config.runtime = config_base.runtime_config()
    return config
