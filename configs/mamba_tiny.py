"""mamba_tiny: a Mamba (selective state-space) byte model on Tiny Shakespeare, on a CPU.

    python -m launch.download_data --tiny_shakespeare
    python -m launch.train --config=configs/mamba_tiny.py

d_model 128, 4 layers, d_state 16, d_conv 4, expand 2, trained on windows of 256 bytes with the same
data, train and sample fields as gpt2_tiny except its learning rate. Training uses the 'fused'
scan: the sequential recurrence with a hand-written backward, the fastest form on a small CPU, where
every associative-scan form loses to it and to the plain sequential scan (BENCHMARKS.md, Mamba
training scan). On a GPU try `--config.model.scan_mode=parallel --config.model.scan_chunk=64`.
"""

import ml_collections

from bytelm import config_base


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "mamba_tiny"

    config.model = config_base.model_config(
        "mamba",
        d_model=128,
        num_layers=4,
        d_state=16,
        d_conv=4,
        expand=2,  # d_inner = 256
        dt_rank="auto",  # 'auto' = ceil(d_model / 16) = 8, or a number as a string
        seq_len=256,  # training window; sampling has no window
        # 'fused' (fastest on CPU), 'parallel' (jax.lax.associative_scan) or 'sequential' (the reference)
        scan_mode="fused",
        scan_chunk=16,  # parallel mode only: positions per associative-scan chunk; 0 = one scan
    )

    config.data = config_base.data_config()
    config.train = config_base.train_config()
    config.train.lr = 2e-3
    config.sample = config_base.sample_config()
    config.runtime = config_base.runtime_config()
    return config
