"""What generic code asks a model family, so that it never has to branch on the family's name.

A family is one subpackage of `bytelm.models` (`gpt2`, `mamba`, `bigram`, …) and one line in the
registry (`bytelm/models/__init__.py`). Its `__init__` imports no JAX, so a config file and a
mistyped flag cost a fraction of a second; it holds the family's config and a `Family` that says:

    name              `config.model.name`
    config_class      a frozen, hashable dataclass built from `config.model`: its sizes (`required()`),
                      its options with their defaults written once (`option(...)`), and settings that
                      choose how it computes rather than what (`internal(...)`: kernels, loop unrolls)
    build(config)     the flax module; the network module (with JAX) is imported only here
    hidden_matrix     which leaves Muon updates under `train.optimizer='muon'` (default: none)
    decays            which leaves take AdamW's weight decay (default: the matrices, ndim >= 2)
    stages, stage     how many stages of a hierarchy it has, and which one a leaf is in, outermost first
                      (default: one stage, 0), for `train.lr_multiplier`'s rate per stage (H-Net's)
    kernel_options    the `models.build` keyword options it accepts (`runtime.fast_kernels`)
    dropout_fields    its config fields that are dropout rates, each checked to lie in [0, 1) (the
                      records' ablation adds or removes them together)
    attention_layout  (seq_len, heads, head_dim) when it has fused-attention kernels to check
    flops_per_token   training FLOPs per token by the usual 6N count (None where there is no formula)

Every network implements the decoding protocol of `bytelm.models.decoding` (an empty cache, a prefill
of a prompt, a step of new tokens), so the samplers never ask which kind of model they hold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from bytelm.errors import ConfigError

Path = tuple[str, ...]  # a leaf's keys, e.g. ('params', 'h_0', 'attn', 'qkv', 'kernel')


def required(minimum: int = 1) -> Any:
    """A size the config must give (no default), at least `minimum`."""
    return dataclasses.field(metadata={"config": True, "minimum": minimum})


def option(default: Any, choices: tuple = (), minimum: int | None = None) -> Any:
    """A config field with its default (what older runs, saved before it existed, did too)."""
    return dataclasses.field(default=default, metadata={"config": True, "choices": choices, "minimum": minimum})


def internal(default: Any) -> Any:
    """Not a config field: how the model computes (kernels, unrolls), never what; no pack depends on it."""
    return dataclasses.field(default=default, metadata={"config": False})


class Family:
    """The base every family's declaration subclasses; the defaults below fit a family without
    Muon matrices, kernels or a FLOP formula."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    kernel_options: ClassVar[tuple[str, ...]] = ()
    dropout_fields: ClassVar[tuple[str, ...]] = ()
    stages: ClassVar[int] = 1

    # --- the config -------------------------------------------------------------------------------

    def fields(self) -> dict[str, dataclasses.Field]:
        """The config fields (`config.model.<field>`), in the dataclass's order."""
        return {f.name: f for f in dataclasses.fields(self.config_class) if f.metadata.get("config")}

    def defaults(self) -> dict[str, Any]:
        """Every config field that has a default, with it."""
        return {k: f.default for k, f in self.fields().items() if f.default is not dataclasses.MISSING}

    def model_config(self, **values: Any) -> dict[str, Any]:
        """`config.model` as a config file writes it: `name`, then every field, the defaults filled in.
        An unknown field or a missing size is a one-line `ConfigError`."""
        fields = self.fields()
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"unknown {self.name} field {', '.join(unknown)}: choose from {', '.join(fields)}")
        missing = [k for k, f in fields.items() if k not in values and f.default is dataclasses.MISSING]
        if missing:
            raise ConfigError(f"the {self.name} config needs {', '.join(missing)}")
        return {"name": self.name, **{k: values.get(k, f.default) for k, f in fields.items()}}

    def config(self, model_config: Mapping, **kernels: Any):
        """The checked dataclass for `config.model` (a ConfigDict or dict); a field the saved config
        lacks (a run saved before it existed) takes its default. `kernels` are `kernel_options`."""
        bad = sorted(set(kernels) - set(self.kernel_options))
        if bad:
            raise ConfigError(f"kernel options {', '.join(bad)} do not apply to model.name={self.name!r}")
        fields, values = self.fields(), {}
        unknown = sorted(set(model_config.keys()) - set(fields) - {"name"})
        if unknown:
            raise ConfigError(f"model.{unknown[0]} is not a {self.name} field: choose from {', '.join(fields)}")
        for key, f in fields.items():
            if key in model_config:
                values[key] = _as_type_of(f.default, model_config[key])
            elif f.default is dataclasses.MISSING:
                raise ConfigError(f"model.{key} is missing: the {self.name} config needs it")
        config = self.config_class(**values, **kernels)
        _check(config, fields, self.dropout_fields)
        return config

    # --- what generic code asks -------------------------------------------------------------------

    def build(self, config):
        """The flax module for a checked config."""
        raise NotImplementedError

    def hidden_matrix(self, path: Path, shape: tuple[int, ...]) -> bool:
        """True for the leaves Muon updates (2-D matrices inside the blocks)."""
        return False

    def decays(self, path: Path, shape: tuple[int, ...]) -> bool:
        """True for the leaves AdamW's weight decay applies to: the matrices, not norms or biases."""
        return len(shape) >= 2

    def stage(self, path: Path) -> int:
        """The stage of a hierarchy a leaf belongs to, 0 the outermost (bytes); < `stages`."""
        return 0

    def attention_layout(self, config) -> tuple[int, int, int] | None:
        """(seq_len, heads, head_dim) for the fused-attention check of `runtime.fast_kernels`."""
        return None

    def flops_per_token(self, config) -> float | None:
        """Training FLOPs per token (forward and backward), or None."""
        return None


def _as_type_of(default: Any, value: Any) -> Any:
    # JSON and the command line may give an int where the field is a float (rope_base=10000).
    return float(value) if isinstance(default, float) and isinstance(value, int) else value


def _check(config, fields: dict[str, dataclasses.Field], dropout_fields: tuple[str, ...] = ()) -> None:
    """The declared minimums, choices and dropout rates, then the config's own `check()` for what spans
    fields."""
    for key, f in fields.items():
        value, minimum, choices = getattr(config, key), f.metadata.get("minimum"), f.metadata.get("choices")
        if minimum is not None and value < minimum:
            raise ConfigError(f"model.{key} must be at least {minimum}, got {value}")
        if choices and value not in choices:
            raise ConfigError(f"model.{key}={value!r}: choose one of {', '.join(map(str, choices))}")
    for key in dropout_fields:
        if not 0.0 <= getattr(config, key) < 1.0:
            raise ConfigError(f"model.{key}={getattr(config, key)} must lie in [0, 1)")
    if hasattr(config, "check"):
        config.check()
