"""The byte bigram family: the next byte's logits from the previous byte alone, one [256, 256] table.

The classic baseline of character-level models (makemore's first model, Shannon's digram statistics):
whatever a model with context learns beyond it is what the context buys. Its whole-split validation
loss is the floor the model-family table starts from. The network is `network.py`.
"""

from __future__ import annotations

import dataclasses

from bytelm.data.tokenizer import VOCAB_SIZE
from bytelm.models.family import Family, internal, required


@dataclasses.dataclass(frozen=True)
class BigramConfig:
    """A bigram has no sizes to choose: only the training window. Frozen and hashable for `jax.jit`."""

    seq_len: int = required()  # training window; the model itself looks one byte back
    vocab_size: int = internal(VOCAB_SIZE)


class BigramFamily(Family):
    name = "bigram"
    config_class = BigramConfig

    def build(self, config: BigramConfig):
        from bytelm.models.bigram.network import Bigram

        return Bigram(config)

    def flops_per_token(self, config: BigramConfig) -> float:
        return 6.0 * config.vocab_size * config.vocab_size  # the table is one [V, V] matmul


FAMILY = BigramFamily()
