"""The Mamba family (Gu & Dao 2023): its config and what generic code asks of it. The network is
`network.py` and the selective scan's four forms `scans.py`, imported only when a model is built.

Weight decay follows the official block (state-spaces/mamba `mamba_simple.py`, which marks `A_log` and
`D` `_no_weight_decay`): AdamW decays the matrices but `A_log`, whose decay would pull every state's
decay rate A = −exp(A_log) towards −1.
"""

from __future__ import annotations

import dataclasses
import math

from bytelm.data.tokenizer import VOCAB_SIZE
from bytelm.errors import ConfigError
from bytelm.models.family import Family, Path, internal, option, required

SCAN_MODES = ("parallel", "sequential", "fused")
# Positions per iteration of the fused loops: one position's work is small next to XLA:CPU's cost per
# loop iteration, so unrolling pays (BENCHMARKS.md, Choices: fused unroll).
FUSED_UNROLL = 4
NO_DECAY = ("A_log", "D")  # the official block's `_no_weight_decay` parameters


@dataclasses.dataclass(frozen=True)
class MambaConfig:
    """Sizes of a Mamba. Frozen and hashable, so it can be a static argument of `jax.jit`."""

    seq_len: int = required()  # training window; the model itself has no length limit
    d_model: int = required()
    num_layers: int = required()
    d_state: int = option(16, minimum=1)
    d_conv: int = option(4, minimum=1)
    expand: int = option(2, minimum=1)
    dt_rank: str = option("auto")  # 'auto' = ceil(d_model / 16), or a positive integer (a number as a string)
    scan_mode: str = option("parallel", choices=SCAN_MODES)
    scan_chunk: int = option(0, minimum=0)  # parallel mode: positions per associative scan; 0 = one scan
    # Dropout, each a rate (0 = none, as the official block, and every earlier run): after the embedding,
    # and on each block's residual branch (the mixer's output). Only while training (`models/dropout.py`).
    embed_dropout: float = option(0.0)
    resid_dropout: float = option(0.0)
    vocab_size: int = internal(VOCAB_SIZE)
    scan_unroll: int = internal(FUSED_UNROLL)  # positions per iteration of the fused loops

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        """Δ's low rank: `dt_rank` resolved."""
        return math.ceil(self.d_model / 16) if str(self.dt_rank) == "auto" else int(self.dt_rank)

    def check(self) -> None:
        rank = str(self.dt_rank)
        if rank != "auto" and not (rank.isdigit() and int(rank) > 0):
            raise ConfigError(f"model.dt_rank must be 'auto' or a positive integer, got {self.dt_rank!r}")


class MambaFamily(Family):
    name = "mamba"
    config_class = MambaConfig
    dropout_fields = ("embed_dropout", "resid_dropout")

    def build(self, config: MambaConfig):
        from bytelm.models.mamba.network import Mamba

        return Mamba(config)

    def hidden_matrix(self, path: Path, shape: tuple[int, ...]) -> bool:
        # The projections of each layer (in, x, dt, out); not the conv, A_log, the embedding or the norms.
        return len(shape) == 2 and path[-1] == "kernel" and any(k.startswith("layers_") for k in path)

    def decays(self, path: Path, shape: tuple[int, ...]) -> bool:
        return len(shape) >= 2 and path[-1] not in NO_DECAY


FAMILY = MambaFamily()
