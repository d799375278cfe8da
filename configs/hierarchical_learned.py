"""hierarchical_learned: a hierarchical byte model on Tiny Shakespeare, on a CPU: chunks by the learned
rule.

    python -m launch.download_data --tiny_shakespeare
    python -m launch.train --config=configs/hierarchical_learned.py

One Mamba-2 byte layer before and one after (mamba2_tiny's heads, state and chunks) around a main
network of four GPT blocks of width 128 that runs on the chunks only: the learned router (H-Net's cosine
rule, with its ratio loss aiming at one chunk per `chunk_ratio` bytes) decides where a chunk starts.
Windows of 256 bytes, 128 chunk slots a window. Chosen by measurement: one byte layer each side trains
at about 1.4-1.5x the tokens/s of two (BENCHMARKS.md, Model families, has what each rule reaches); the
other two rules are configs/hierarchical_*.py."""

import ml_collections

from bytelm import config_base


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "hierarchical_learned"

    config.model = config_base.model_config(
        "hierarchical",
        d_model=128,
        seq_len=256,
        boundaries="learned",
        chunk_ratio=4,  # bytes per chunk the ratio loss aims at
        slots=128,  # chunks a window may hold (overflow is counted in the log)
        encoder_layers=1,
        decoder_layers=1,
        byte_layers="mamba2",
        headdim=128,  # mamba2_tiny's byte layers: two heads of 128, d_state 16, SSD chunks of 16
        d_state=16,
        ssd_chunk=16,
        main_layers=4,
        main_heads=4,
    )

    config.data = config_base.data_config()
    config.train = config_base.train_config()
    config.train.lr = 2e-3
    config.sample = config_base.sample_config()
    config.runtime = config_base.runtime_config()
    return config
