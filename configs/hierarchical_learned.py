"""hierarchical_learned: a hierarchical byte model on Tiny Shakespeare, on a CPU: chunks by the learned
rule.

    python -m launch.download_data --tiny_shakespeare
    python -m launch.train --config=configs/hierarchical_learned.py

One Mamba-2 byte layer before and one after (mamba2_tiny's heads, state and chunks) around a main
network of four GPT blocks of width 128 that runs on the chunks only: the learned router (H-Net's cosine
rule, with its ratio loss aiming at one chunk per `chunk_ratio` bytes) decides where a chunk starts.
Windows of 256 bytes, 128 chunk slots a window. The byte stage (embedding, byte layers, router)
learns at twice the main network's rates (`train.lr_multiplier`, H-Net's per-stage rates). Chosen by
measurement: one byte layer each side trains at about 1.4-1.5x the tokens/s of two; at 1200 steps
(seeds 0 / 1, whole-split validation, 2026-12-07) rates x 2 on the byte stage reached 1.6178 / 1.5975
with 30% / 61% of chunks starting a word, against 1.6106 / 1.6130 and 25% / 43% at x 1 (the families
table's earlier runs), and x 3 1.6250 / 1.6062 and 26% / 50%; a target of one chunk per 6 bytes
(H-Net's) with x 2 reached 1.6231 / 1.6215 and 41% / 36%. BENCHMARKS.md, Model families, has what each
rule reaches; the other two rules are configs/hierarchical_*.py and share this recipe."""

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
    config.train.lr_multiplier = "2,1"  # the byte stage, the main network
    config.sample = config_base.sample_config()
    config.runtime = config_base.runtime_config()
    return config
