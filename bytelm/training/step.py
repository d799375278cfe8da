"""The train state, the loss, and the jitted train and eval steps, placed on a device mesh."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bytelm.data import batches
from bytelm.parallel import mesh


class TrainState(NamedTuple):
    """Everything a step changes. `step`: int32 scalar (updates done); `params`: `{'params': ...}`."""

    step: jax.Array
    params: dict
    opt_state: optax.OptState


def masked_nll(logits_BxLxV: jax.Array, y_BxLxV: jax.Array, mask_BxL: jax.Array) -> jax.Array:
    """Per-position negative log-likelihood in nats `[B, L]`, zero where the mask is 0."""
    logp = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32), axis=-1)
    return -jnp.sum(y_BxLxV * logp, axis=-1) * mask_BxL


# What a model may sow while it trains (`flax.linen.Module.sow`): losses added to the language-model loss
# (a hierarchical model's ratio loss), and numbers logged with each step (its compression, its overflow).
SOWN = ("losses", "metrics")


def model_metrics(sown: dict) -> dict:
    """The numbers a model sowed into `metrics`, as the step's `model/<name>` metrics (their sum when sown
    more than once), and its weighted `losses` as `model/<name>_loss`."""
    out = {}
    for collection, suffix in (("metrics", ""), ("losses", "_loss")):
        for name, values in sown.get(collection, {}).items():
            out[f"model/{name}{suffix}"] = sum(jax.tree_util.tree_leaves(values))
    return out


def training_loss(model) -> Callable:
    """`loss(params, batch, dropout_key) -> (the loss to differentiate, (the language-model loss, the
    model's metrics))`: the masked mean NLL in nats per byte, plus the losses the model sowed."""

    def loss_fn(params, batch: batches.Batch, key: jax.Array) -> tuple[jax.Array, tuple]:
        logits, sown = model.apply(params, batch.x, mutable=list(SOWN), rngs={"dropout": key})
        nll = masked_nll(logits, batch.y, batch.mask)
        loss = nll.sum() / jnp.maximum(batch.mask.sum(), 1.0)
        aux = sum(jax.tree_util.tree_leaves(sown.get("losses", {})), jnp.zeros(()))
        return loss + aux, (loss, model_metrics(sown))

    return loss_fn


def _keep_if(ok: jax.Array, new, old):
    """`new` where `ok`, else `old`, leaf by leaf (a skipped step leaves the state as it was)."""
    return jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, old)


def make_steps(
    model,
    optimizer,
    batch_size: int,
    seq_len: int,
    max_grad_norm_skip: float = 0.0,
    device_mesh=None,
    state_shardings=None,
    dropout_seed: int = 0,
) -> tuple[Callable, Callable]:
    """The jitted train step (donating its state) and eval step for `model`.

    `train_step(state, batch) -> (state, {'loss', 'grad_norm'[, 'skipped'], 'model/…'})`: the model's dropout
    (where its config asks for some) draws from the key fold_in(key(dropout_seed), step), so a resumed run
    drops what an uninterrupted one did; `loss` is the
    language-model loss (nats per byte) and the `model/…` metrics what the model sowed (`SOWN`; its
    `losses` are added to the loss that is differentiated);
    `eval_step(params, batch) -> (per-window NLL sums [B], target counts [B])`.
    With `max_grad_norm_skip > 0`, a step whose loss or gradient norm is non-finite or whose gradient
    norm is above it leaves the parameters and optimizer state as they were (`metrics['skipped']`);
    the step counter still advances, so the next step sees the next batch.
    With a `device_mesh` (`bytelm.parallel.mesh`), batches are split over its devices and the state is
    laid out by `state_shardings` (a `TrainState` of shardings; default replicated): the steps get
    explicit shardings and XLA partitions them, inserting the collectives. Metrics and the eval
    step's per-window outputs come back replicated.
    """

    loss_fn = training_loss(model)

    def train_step(state: TrainState, batch: batches.Batch) -> tuple[TrainState, dict]:
        batches.assert_batch(batch, batch_size, seq_len)  # fires at trace time, i.e. the first step
        key = jax.random.fold_in(jax.random.key(dropout_seed), state.step)  # dropout's: a function of the step
        (_, (loss, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **extra}
        if max_grad_norm_skip > 0:
            gn = metrics["grad_norm"]
            ok = jnp.isfinite(loss) & jnp.isfinite(gn) & (gn <= max_grad_norm_skip)
            params, opt_state = _keep_if(ok, params, state.params), _keep_if(ok, opt_state, state.opt_state)
            metrics["skipped"] = ~ok
        return TrainState(state.step + 1, params, opt_state), metrics

    def eval_step(params, batch: batches.Batch) -> tuple[jax.Array, jax.Array]:
        nll = masked_nll(model.apply(params, batch.x), batch.y, batch.mask)
        return nll.sum(axis=-1), batch.mask.sum(axis=-1)

    if device_mesh is None:
        return jax.jit(train_step, donate_argnums=0), jax.jit(eval_step)
    rep, split = mesh.replicated(device_mesh), mesh.batch_sharding(device_mesh)
    batch = batches.Batch(split, split, split)
    state_sh = state_shardings if state_shardings is not None else rep
    params_sh = state_shardings.params if state_shardings is not None else rep
    return (
        jax.jit(train_step, donate_argnums=0, in_shardings=(state_sh, batch), out_shardings=(state_sh, rep)),
        jax.jit(eval_step, in_shardings=(params_sh, batch), out_shardings=(rep, rep)),
    )


def place_state(params, optimizer, device_mesh, fsdp_min_size: int) -> tuple[TrainState, TrainState]:
    """A fresh `TrainState` from `params` laid out on `device_mesh`, and its shardings (a `TrainState`
    of them, for `make_steps` and for restoring checkpoints)."""
    # One compiled program: op by op, init would compile a zeros program per distinct leaf shape.
    host_state = TrainState(np.zeros((), np.int32), params, jax.jit(optimizer.init)(params))
    shardings = mesh.state_shardings(device_mesh, host_state, fsdp_min_size)
    return mesh.put(host_state, shardings), shardings


def batch_maker(
    ids: np.ndarray, seq_len: int, batch_size: int, device_mesh=None
) -> Callable[[np.ndarray], batches.Batch]:
    """`make(starts)`: the batch of the windows at `starts` (`[batch_size]`), ready for the steps.

    Without a mesh it is the host batch. With one, this process builds only the rows its own
    devices hold and the result is the global array, split over the mesh."""
    if device_mesh is None:
        return lambda starts: batches.make_batch(ids, starts, seq_len)
    rows = mesh.process_rows(device_mesh, batch_size)

    def make(starts: np.ndarray) -> batches.Batch:
        local = batches.make_batch(ids, starts[rows], seq_len)
        return batches.Batch(*(mesh.put_rows(a, device_mesh, batch_size) for a in local))

    return make
