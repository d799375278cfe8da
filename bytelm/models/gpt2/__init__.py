"""The GPT-2 family: its config, with every architecture option's default written once, and what
generic code asks of it. The network is `transformer.py`, imported only when a model is built.

Architecture options (`config.model`; the defaults are GPT-2's, so a config that leaves them alone is
GPT-2 exactly and exports to transformers' `GPT2LMHeadModel`):

    positions   'learned' (wpe) | 'rope': rotary q and k (base `rope_base`), no wpe
    norm        'layernorm' | 'rmsnorm' (no mean, no bias)
    activation  'gelu' (tanh approximation) | 'relu2': relu(x)²
    qk_norm     RMS-normalise each head's q and k (with a learned scale [K]) before the dot product
    biases      dense and layer-norm biases (off: none anywhere)
    tied_head   logits from wte (off: a separate `head` [D, V])
    zero_init   output projections (attn/proj, mlp/proj and an untied head) start at zero
"""

from __future__ import annotations

import dataclasses

from bytelm.data.tokenizer import VOCAB_SIZE
from bytelm.errors import ConfigError
from bytelm.models.family import Family, Path, internal, option, required

# 'einsum': the attention written out in transformer.py; 'xla' and 'cudnn': jax.nn.dot_product_attention's.
ATTENTION_KERNELS = ("einsum", "xla", "cudnn")
COMPUTE_DTYPES = ("float32", "bfloat16")
# The architecture options, whose defaults (GPT2Config's) are GPT-2's own.
ARCHITECTURE_OPTIONS = ("positions", "rope_base", "norm", "activation", "qk_norm", "biases", "tied_head", "zero_init")


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """Sizes and options of a GPT-2. Frozen and hashable, so it can be a static argument of `jax.jit`."""

    seq_len: int = required()
    num_layers: int = required()
    num_heads: int = required()
    head_dim: int = required()
    ffn_hidden: int = required()
    positions: str = option("learned", choices=("learned", "rope"))
    rope_base: float = option(10000.0)
    norm: str = option("layernorm", choices=("layernorm", "rmsnorm"))
    activation: str = option("gelu", choices=("gelu", "relu2"))
    qk_norm: bool = option(False)
    biases: bool = option(True)
    tied_head: bool = option(True)
    zero_init: bool = option(False)
    # Dropout, each a rate (0 = none: GPT-2 as trained without it, and every earlier run): after the
    # embedding, on each block's two residual branches, on the attention weights. Only while training
    # (a step that passes a `dropout` PRNG key); evaluation and sampling never drop.
    embed_dropout: float = option(0.0)
    resid_dropout: float = option(0.0)
    attn_dropout: float = option(0.0)
    vocab_size: int = internal(VOCAB_SIZE)
    attention: str = internal("einsum")  # one of ATTENTION_KERNELS (forward passes; decoding uses einsum)
    compute_dtype: str = internal("float32")  # matmul dtype; parameters stay float32 either way

    @property
    def width(self) -> int:
        return self.num_heads * self.head_dim

    def is_gpt2(self) -> bool:
        """True when every architecture option is GPT-2's own."""
        defaults = FAMILY.defaults()
        return all(getattr(self, f) == defaults[f] for f in ARCHITECTURE_OPTIONS)

    def check(self) -> None:
        if self.attn_dropout and self.attention != "einsum":
            raise ConfigError("model.attn_dropout needs the einsum attention: leave runtime.fast_kernels off with it")
        if self.positions == "rope" and (self.head_dim % 2 or self.rope_base <= 1):
            raise ConfigError(
                f"rotary positions need an even model.head_dim and model.rope_base > 1, got "
                f"{self.head_dim} and {self.rope_base}"
            )
        if self.attention not in ATTENTION_KERNELS or self.compute_dtype not in COMPUTE_DTYPES:
            raise ConfigError(
                f"attention {self.attention!r} / compute dtype {self.compute_dtype!r}: expected one of "
                f"{', '.join(ATTENTION_KERNELS)} / {', '.join(COMPUTE_DTYPES)}"
            )


class GPT2Family(Family):
    name = "gpt2"
    config_class = GPT2Config
    dropout_fields = ("embed_dropout", "resid_dropout", "attn_dropout")
    kernel_options = ("attention", "compute_dtype")

    def build(self, config: GPT2Config):
        from bytelm.models.gpt2.transformer import GPT2

        return GPT2(config)

    def hidden_matrix(self, path: Path, shape: tuple[int, ...]) -> bool:
        # The attention and MLP matmuls of the blocks h_i; embeddings, the head, norms and biases are not.
        return len(shape) == 2 and path[-1] == "kernel" and any(k.startswith("h_") for k in path)

    def attention_layout(self, config: GPT2Config) -> tuple[int, int, int]:
        return config.seq_len, config.num_heads, config.head_dim

    def flops_per_token(self, config: GPT2Config) -> float:
        """nanoGPT's count: 6 × the matmul parameters (the tied head included) + attention's
        12·layers·width·seq_len."""
        c = config
        per_layer = c.width * 3 * c.width + c.width * c.width + 2 * c.width * c.ffn_hidden  # the four matmuls
        matmul_params = c.num_layers * per_layer + c.vocab_size * c.width
        return 6 * matmul_params + 12 * c.num_layers * c.width * c.seq_len


FAMILY = GPT2Family()
