"""hierarchical_space: a hierarchical byte model on Tiny Shakespeare, on a CPU: chunks by the space rule.

    python -m launch.download_data --tiny_shakespeare
    python -m launch.train --config=configs/hierarchical_space.py

One Mamba-2 byte layer before and one after (mamba2_tiny's heads, state and chunks) around a main
network of four GPT blocks of width 128 that runs on the chunks only: a chunk starts at the first byte
of each run of space-like bytes (SpaceByte's rule: ASCII that is not a letter or a digit, and UTF-8 lead
bytes), about one byte in five of Tiny Shakespeare. Windows of 256 bytes, 96 chunk slots a window.
Chosen by measurement: one byte layer each side trains at about 1.4-1.5x the tokens/s of two
(BENCHMARKS.md, Model families, has what each rule reaches); the other two rules are
configs/hierarchical_*.py. Its recipe is hierarchical_learned's, which it loads: with the byte stage at
twice the main network's rates (`train.lr_multiplier='2,1'`) it reached 1.5905 / 1.5892 after 1500 steps
(seeds 0 / 1, whole-split validation, 2026-12-07), against 1.6107 / 1.5992 at the same rates everywhere.
Two levers that did not pay at a 5-minute budget (same day, whole processes, whole-split evaluations
along the way): the records' Muon (muon_lr 0.03, warmup-stable-decay, 1200 steps to end by 5 minutes)
reached 1.6003 / 1.5976 in 299 / 324 s, where this config stands at 1.600 / 1.611 by 5 minutes; a main
network twice as wide (`model.main_width=256`, seed 0) trained at 0.7× the tokens/s and stood at 1.7051
after 274 s, 1.6052 after its 1500 steps in 535 s."""

from pathlib import Path

import ml_collections

from bytelm import config_base


def get_config() -> ml_collections.ConfigDict:
    config = config_base.load_config_file(Path(__file__).with_name("hierarchical_learned.py"))  # its sizes
    config.name = "hierarchical_space"
    config.model.boundaries = "space"
    config.model.slots = 96  # chunks a window may hold (overflow is counted in the log)
    return config
