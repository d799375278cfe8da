"""The hierarchical family: byte layers around a main network that runs on chunks of bytes only.

As H-Net's one-stage model (Hwang, Wang & Gu 2025, "Dynamic Chunking for End-to-End Hierarchical
Sequence Modeling"; goombalab/hnet `hnet/models/hnet.py`, `hnet/modules/dc.py`), with three rules for
where a chunk starts (`boundaries.py`), so that fixed patches (Hourglass, MEGABYTE), SpaceByte's rule
and H-Net's learned routing are one model with one switch:

    bytes → embedding → encoder layers (byte resolution) → boundaries → chunk (the boundary bytes,
    gathered into `slots` positions) → main network (GPT blocks over the chunks) → dechunk (an EMA of
    the chunk outputs weighted by the boundary probabilities; each byte takes its chunk's) → + a
    residual from the encoder → decoder layers (byte resolution) → logits

Symbols: L bytes, S chunk slots, D width, p_t the boundary probability, b_t the boundary. The network
is `network.py`; chunk and dechunk are `chunking.py`.
"""

from __future__ import annotations

import dataclasses
import math

from bytelm.data.tokenizer import VOCAB_SIZE
from bytelm.errors import ConfigError
from bytelm.models.family import Family, Path, internal, option, required
from bytelm.models.mamba2 import NO_DECAY

BOUNDARY_RULES = ("learned", "fixed", "space")
BYTE_LAYERS = ("mamba2", "gpt2")  # what the encoder and decoder are made of


@dataclasses.dataclass(frozen=True)
class HierarchicalConfig:
    """Sizes of a hierarchical byte model. Frozen and hashable, so it can be a static argument of `jax.jit`."""

    seq_len: int = required()  # the training window, and the context the model sees when it samples
    d_model: int = required()  # D, the byte layers' width (and the main network's, unless main_width)
    boundaries: str = option("learned", choices=BOUNDARY_RULES)
    chunk_ratio: int = option(4, minimum=1)  # bytes per chunk: 'fixed's stride, 'learned's target (the ratio loss's N)
    slots: int = option(0, minimum=0)  # chunks a window holds (0: 2·ceil(seq_len / chunk_ratio), at most seq_len)
    ratio_loss: float = option(0.03)  # 'learned': the weight of H-Net's ratio loss (its α)
    encoder_layers: int = option(2, minimum=0)
    decoder_layers: int = option(2, minimum=0)
    byte_layers: str = option("mamba2", choices=BYTE_LAYERS)
    main_layers: int = option(4, minimum=1)
    main_heads: int = option(4, minimum=1)
    main_width: int = option(0, minimum=0)  # the main network's width (0: d_model); wider is padded, as H-Net
    main_ffn: int = option(0, minimum=0)  # 0: 4 × the main network's width
    main_positions: str = option("rope", choices=("learned", "rope"))  # over the chunk slots
    main_norm: str = option("rmsnorm", choices=("layernorm", "rmsnorm"))
    main_qk_norm: bool = option(False)
    byte_heads: int = option(4, minimum=1)  # gpt2 byte layers: heads (rotary positions)
    d_state: int = option(16, minimum=1)  # mamba2 byte layers: N
    headdim: int = option(64, minimum=1)  # mamba2 byte layers: P
    ssd_chunk: int = option(16, minimum=1)  # mamba2 byte layers: positions per SSD chunk
    vocab_size: int = internal(VOCAB_SIZE)

    @property
    def d_main(self) -> int:
        """The main network's width: `main_width`, or D."""
        return self.main_width or self.d_model

    @property
    def num_slots(self) -> int:
        return self.slots or min(self.seq_len, 2 * math.ceil(self.seq_len / self.chunk_ratio))

    def check(self) -> None:
        if self.num_slots > self.seq_len:
            raise ConfigError(
                f"model.slots={self.slots} exceeds model.seq_len={self.seq_len}: a chunk starts at a byte"
            )
        if self.main_width and self.main_width < self.d_model:
            raise ConfigError(
                f"model.main_width={self.main_width} is below model.d_model={self.d_model}: the main network "
                "is as wide as the byte layers or wider (0 for the same width)"
            )
        main_field = "main_width" if self.main_width else "d_model"
        heads = {"main_heads": (self.main_heads, self.main_positions == "rope", main_field, self.d_main)}
        if self.byte_layers == "gpt2":  # rotary positions: an even head size
            heads["byte_heads"] = (self.byte_heads, True, "d_model", self.d_model)
        for field, (n, rotary, width_field, width) in heads.items():
            if width % n or (rotary and (width // n) % 2):
                raise ConfigError(
                    f"model.{field}={n} must divide model.{width_field}={width}"
                    + (" into heads of an even size (rotary positions)" if rotary else "")
                )
        if self.byte_layers == "mamba2" and (2 * self.d_model) % self.headdim:
            raise ConfigError(f"model.headdim={self.headdim} must divide 2 × d_model = {2 * self.d_model}")
        if self.boundaries == "learned" and self.chunk_ratio < 2:
            raise ConfigError("model.chunk_ratio must be at least 2 for learned boundaries (the ratio loss's N)")


class HierarchicalFamily(Family):
    name = "hierarchical"
    config_class = HierarchicalConfig
    stages = 2  # the byte layers (with the embedding, router and residual), then the main network

    def build(self, config: HierarchicalConfig):
        from bytelm.models.hierarchical.network import Hierarchical

        return Hierarchical(config)

    def decays(self, path: Path, shape: tuple[int, ...]) -> bool:
        # Matrices only, as every family; the Mamba-2 byte layers' A_log, D and dt_bias never, whatever
        # their shape (as the Mamba-2 family itself declares).
        return len(shape) >= 2 and path[-1] not in NO_DECAY

    def hidden_matrix(self, path: Path, shape: tuple[int, ...]) -> bool:
        # The matmuls of the byte layers and the main network's blocks; not the router's, the residual or
        # the embedding.
        blocks = ("encoder_", "decoder_", "main_")
        return len(shape) == 2 and path[-1] == "kernel" and any(k.startswith(blocks) for k in path[1:2])

    def stage(self, path: Path) -> int:
        # As H-Net's stage_idx: the main network's blocks and its positions are the inner stage; the
        # pad it is fed (main_pad) is the outer model's parameter, as H-Net's pad_dimension is.
        module = path[1] if len(path) > 1 else ""
        return int(module == "main_wpe" or (module.startswith("main_") and module[5:].isdigit()))

    def flops_per_token(self, config: HierarchicalConfig) -> float:
        """6 × the byte layers' and head's matmul parameters per byte (GPT byte layers' attention counted
        as GPT-2's, 12·layers·D·seq_len), + the main network's per chunk (at its width M; its attention
        12·layers·M·slots),
        at one chunk per `chunk_ratio` bytes (the ratio the rules aim at)."""
        c, D, M = config, config.d_model, config.d_main
        ffn = c.main_ffn or 4 * M
        main = c.main_layers * (4 * M * M + 2 * M * ffn) + 2 * c.main_layers * M * c.num_slots
        if c.byte_layers == "mamba2":
            E = 2 * D
            byte = D * (2 * E + 2 * c.d_state + E // c.headdim) + E * D
        else:  # GPT blocks over the bytes: their matmuls and their attention over seq_len, as GPT-2's
            byte = 12 * D * D + 2 * D * c.seq_len
        per_byte = (c.encoder_layers + c.decoder_layers) * byte + 2 * D * D + c.vocab_size * D
        return 6.0 * (per_byte + main / c.chunk_ratio)  # (12·L·D·S = 6 × 2·L·D·S)


FAMILY = HierarchicalFamily()
