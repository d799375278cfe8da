"""The optimizer and its learning-rate schedule, from `config.train`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax


def lr_schedule(tc: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up to `lr` over `warmup_steps`, then cosine decay to `min_lr` at `steps`.

    `count` is the number of updates already applied, so the first update uses lr/warmup_steps
    rather than 0 (a zero first step would waste a step and a batch).
    """
    warmup = max(int(tc.warmup_steps), 0)
    decay = max(int(tc.steps) - warmup, 1)

    def schedule(count: jax.Array) -> jax.Array:
        count = jnp.asarray(count, jnp.float32)
        warm = tc.lr * (count + 1) / max(warmup, 1)
        progress = jnp.clip((count - warmup) / decay, 0.0, 1.0)
        cosine = tc.min_lr + 0.5 * (tc.lr - tc.min_lr) * (1 + jnp.cos(jnp.pi * progress))
        return jnp.where(count < warmup, warm, cosine)

    return schedule


def make_optimizer(tc: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW with the schedule, weight decay on matrices only (ndim >= 2), global-norm clipping."""
    adamw = optax.adamw(
        lr_schedule(tc),
        b1=tc.beta1,
        b2=tc.beta2,
        weight_decay=tc.weight_decay,
        mask=lambda params: jax.tree_util.tree_map(lambda p: p.ndim >= 2, params),
    )
    return optax.chain(optax.clip_by_global_norm(tc.grad_clip), adamw) if tc.grad_clip > 0 else adamw
