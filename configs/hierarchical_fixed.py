"""hierarchical_fixed: a hierarchical byte model on Tiny Shakespeare, on a CPU: chunks by the fixed rule.

    python -m launch.download_data --tiny_shakespeare
    python -m launch.train --config=configs/hierarchical_fixed.py

One Mamba-2 byte layer before and one after (mamba2_tiny's heads, state and chunks) around a main
network of four GPT blocks of width 128 that runs on the chunks only: a chunk starts every `chunk_ratio`
bytes (fixed patches, as Hourglass and MEGABYTE). Windows of 256 bytes, 64 chunk slots a window. Chosen
by measurement: one byte layer each side trains at about 1.4-1.5x the tokens/s of two (BENCHMARKS.md,
Model families, has what each rule reaches); the other two rules are configs/hierarchical_*.py.
Its recipe is hierarchical_learned's, which it loads: with the byte stage at twice the main network's
rates (`train.lr_multiplier='2,1'`) it reached 1.6156 / 1.6138 after 1500 steps (seeds 0 / 1, whole-split
validation, 2026-12-07), against 1.6261 / 1.6324 at the same rates everywhere."""

from pathlib import Path

import ml_collections

from bytelm import config_base


def get_config() -> ml_collections.ConfigDict:
    config = config_base.load_config_file(Path(__file__).with_name("hierarchical_learned.py"))  # its sizes
    config.name = "hierarchical_fixed"
    config.model.boundaries = "fixed"
    config.model.slots = 64  # chunks a window may hold (overflow is counted in the log)
    return config
