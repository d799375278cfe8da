"""bigram: the byte bigram baseline (one [256, 256] table of next-byte logits) on Tiny Shakespeare.

    python -m launch.download_data --tiny_shakespeare
    python -m launch.train --config=configs/bigram.py

The floor of the model-family table: what a model learns from the previous byte alone. The same data,
windows and schedule shape as gpt2_tiny, with a learning rate for a table that starts at zero (the
uniform distribution, ln 256 = 5.545 nats) and must move its logits by several units.
"""

import ml_collections

from bytelm import config_base


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "bigram"

    config.model = config_base.model_config("bigram", seq_len=64)

    config.data = config_base.data_config()
    config.train = config_base.train_config()
    config.train.lr = 3e-2
    config.train.min_lr = 3e-3
    config.train.steps = 1000
    config.train.weight_decay = 0.0  # decay pulls the table towards the uniform distribution
    config.sample = config_base.sample_config()
    config.runtime = config_base.runtime_config()
    return config
