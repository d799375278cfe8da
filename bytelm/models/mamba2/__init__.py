"""The Mamba-2 family (Dao & Gu 2024, "Transformers are SSMs": structured state space duality): its
config and what generic code asks of it. The network is `network.py`; the state-space duality (SSD)
algorithm and its sequential reference are `ssd.py`.

Mamba-2 makes A a scalar per head, so the recurrence over a chunk of Q positions is a masked Q × Q
matrix product, and the state is carried between chunks by one more small product: the work moves
from Mamba-1's elementwise scan to matmuls. Glossary (the paper's and the official code's):
d = d_model, E = expand·d (d_inner), P = headdim, H = E / P heads, G = ngroups (heads share B and C
within a group), N = d_state, K = d_conv, Q = chunk.

Weight decay as the official block (state-spaces/mamba `mamba_ssm/modules/mamba2.py`, which marks A_log,
D and dt_bias `_no_weight_decay`): AdamW decays the matrices only, and none of those three.
"""

from __future__ import annotations

import dataclasses

from bytelm.data.tokenizer import VOCAB_SIZE
from bytelm.errors import ConfigError
from bytelm.models.family import Family, Path, internal, option, required

SCAN_MODES = ("chunked", "sequential")  # SSD's chunked matmuls; the one-position-at-a-time reference
NO_DECAY = ("A_log", "D", "dt_bias")


@dataclasses.dataclass(frozen=True)
class Mamba2Config:
    """Sizes of a Mamba-2. Frozen and hashable, so it can be a static argument of `jax.jit`."""

    seq_len: int = required()  # training window; the model itself has no length limit
    d_model: int = required()
    num_layers: int = required()
    d_state: int = option(64, minimum=1)  # N (the official default is 128, "typically 64 or 128")
    d_conv: int = option(4, minimum=1)  # K
    expand: int = option(2, minimum=1)
    headdim: int = option(64, minimum=1)  # P
    ngroups: int = option(1, minimum=1)  # G
    chunk: int = option(64, minimum=1)  # Q: positions per SSD chunk (how it computes, not what)
    scan_mode: str = option("chunked", choices=SCAN_MODES)
    # Dropout, each a rate (0 = none, as the official block, and every earlier run): after the embedding,
    # and on each block's residual branch (the mixer's output). Only while training (`models/dropout.py`).
    embed_dropout: float = option(0.0)
    resid_dropout: float = option(0.0)
    vocab_size: int = internal(VOCAB_SIZE)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        """The channels the causal conv sees: x, B and C (not z, not dt)."""
        return self.d_inner + 2 * self.ngroups * self.d_state

    def check(self) -> None:
        if self.d_inner % self.headdim:
            raise ConfigError(
                f"model.headdim={self.headdim} must divide expand × d_model = {self.d_inner} (the heads split d_inner)"
            )
        if self.nheads % self.ngroups:
            raise ConfigError(f"model.ngroups={self.ngroups} must divide the {self.nheads} heads")


class Mamba2Family(Family):
    name = "mamba2"
    config_class = Mamba2Config
    dropout_fields = ("embed_dropout", "resid_dropout")

    def build(self, config: Mamba2Config):
        from bytelm.models.mamba2.network import Mamba2

        return Mamba2(config)

    def hidden_matrix(self, path: Path, shape: tuple[int, ...]) -> bool:
        # The in and out projections of each layer; not the conv, the embedding or the norms.
        return len(shape) == 2 and path[-1] == "kernel" and any(k.startswith("layers_") for k in path)

    def decays(self, path: Path, shape: tuple[int, ...]) -> bool:
        # (A_log, D and dt_bias are vectors [H], which the matrices-only default already leaves out; named
        # here so that a change of their shapes cannot start decaying them.)
        return len(shape) >= 2 and path[-1] not in NO_DECAY

    def flops_per_token(self, config: Mamba2Config) -> float:
        """6 × the matmul parameters (projections and the tied head), plus SSD's own matmuls, whose
        forward costs per layer and token 2QN·G (C·Bᵀ) + 2QE (the masked product with X) + 4NE (the
        states in and out) FLOPs, ×3 for the backward."""
        c = config
        proj = c.d_model * (2 * c.d_inner + 2 * c.ngroups * c.d_state + c.nheads) + c.d_inner * c.d_model
        ssd = 2 * c.chunk * c.d_state * c.ngroups + 2 * c.chunk * c.d_inner + 4 * c.d_state * c.d_inner
        return 6 * (c.num_layers * proj + c.vocab_size * c.d_model) + 3 * c.num_layers * ssd


FAMILY = Mamba2Family()
