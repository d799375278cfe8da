"""Every module's input and output shapes and every parameter's shape, inferred without allocating.

`jax.eval_shape` traces the model's forward pass on abstract inputs and abstract variables, and a
flax method interceptor records what each module's `__call__` received and returned, so the table
costs a trace, not a weight. The same table is what WORKSPACE.md shows for the tiny configs.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from bytelm import models
from bytelm.artifacts import param_pack
from bytelm.data.tokenizer import VOCAB_SIZE


@dataclasses.dataclass(frozen=True)
class ModuleCall:
    path: str  # "" is the model itself, then e.g. "h_0/attn"
    module: str  # the module's class name
    inputs: list[str]  # "float32[12, 64, 128]" per array argument
    outputs: list[str]


def _describe(tree) -> list[str]:
    return [f"{x.dtype}{list(x.shape)}" for x in jax.tree_util.tree_leaves(tree) if hasattr(x, "shape")]


def module_calls(model: nn.Module, batch: int, length: int) -> list[ModuleCall]:
    """The `__call__` of every submodule in the order the forward pass makes them, for one-hot
    input `[batch, length, 256]` float32."""
    calls: list[ModuleCall | None] = []

    def record(next_fun, args, kwargs, context):
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        # Reserve the row on entry so the table reads top-down (the model first), like the code.
        index = len(calls)
        calls.append(None)
        out = next_fun(*args, **kwargs)
        module = context.module
        calls[index] = ModuleCall(
            "/".join(module.path), type(module).__name__, _describe((args, kwargs)), _describe(out)
        )
        return out

    def forward(variables, x):
        with nn.intercept_methods(record):
            return model.apply(variables, x)

    x = jax.ShapeDtypeStruct((batch, length, VOCAB_SIZE), jnp.float32)
    jax.eval_shape(forward, models.abstract_variables(model), x)
    return calls


def parameter_shapes(model: nn.Module) -> dict[str, jax.ShapeDtypeStruct]:
    """`{"params/h_0/attn/qkv/kernel": ShapeDtypeStruct}`, as the parameter pack names them."""
    return param_pack.flatten(models.abstract_variables(model))


def format_tables(model_config, batch: int) -> str:
    """The module table, the parameter table and the total, as aligned text."""
    model = models.build(model_config)
    calls = module_calls(model, batch, model_config.seq_len)
    lines = [f"{model_config.name}: modules for input [batch {batch}, length {model_config.seq_len}, {VOCAB_SIZE}]"]
    width = max(len(c.path or "(model)") for c in calls)
    kind = max(len(c.module) for c in calls)
    for c in calls:
        lines.append(
            f"  {c.path or '(model)':<{width}}  {c.module:<{kind}}  {', '.join(c.inputs)} -> {', '.join(c.outputs)}"
        )
    params = parameter_shapes(model)
    lines.append(f"{model_config.name}: parameters")
    width = max(len(p) for p in params)
    for path, leaf in params.items():
        lines.append(f"  {path:<{width}}  {str(leaf.dtype):<8} {str(list(leaf.shape)):<14} {leaf.size:>10,}")
    lines.append(f"  {'total':<{width}}  {'':<8} {'':<14} {models.count_params(params):>10,}")
    return "\n".join(lines)
