"""Mamba's no-decay leaves: what exempting A_log and D from weight decay (the official block's
`_no_weight_decay`, bytelm's default) changes on mamba_tiny's validation curve against decaying them
with every other matrix (what bytelm did before).

Both arms start from the same init and see the same batches (`train.optimizer` AdamW, the config's
schedule cut to `steps`); only the optimizer's decay mask differs. The curve is the validation loss
on `eval_windows` evenly spread windows every `steps / 4` steps, for each seed."""

from __future__ import annotations

from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from bytelm import models
from bytelm.artifacts import param_pack
from bytelm.data import batches, corpus
from bytelm.parallel import mesh
from bytelm.training import evaluation, optimizer, step


class DecayEveryMatrix:
    """A family's declarations with weight decay on every matrix, its exemptions dropped."""

    def __init__(self, family):
        self.family = family

    def __getattr__(self, name: str):
        return getattr(self.family, name)

    def decays(self, path, shape) -> bool:
        return len(shape) >= 2


def _curve(config, family, data, seed: int, steps: int, eval_windows: int) -> list[dict]:
    """The validation losses of one arm every steps/4 steps, with the mean of its A_log leaves (where decay
    acts), trained on two devices as launch.train does."""
    tc, seq_len = config.train, config.model.seq_len
    model = models.build(config.model)
    device_mesh = mesh.make_mesh("data=-1")
    opt = optimizer.make_optimizer(tc, family, device_mesh)
    params = models.init_variables(model, jax.random.key(seed))
    state, shardings = step.place_state(params, opt, device_mesh, config.runtime.fsdp_min_size)
    train_step, eval_step = step.make_steps(model, opt, tc.batch_size, seq_len, 0.0, device_mesh, shardings)
    make_train = step.batch_maker(data.train, seq_len, tc.batch_size, device_mesh)
    make_eval = step.batch_maker(data.val, seq_len, tc.eval_batch_size, device_mesh)
    starts = batches.eval_starts(data.val.piece_sizes, seq_len, eval_windows)
    curve = []
    for n in range(1, steps + 1):
        state, _ = train_step(
            state, make_train(batches.train_starts(data.train.size, seq_len, tc.batch_size, n - 1, seed, None))
        )
        if n % (steps // 4) == 0:
            ev = evaluation.evaluate(eval_step, state.params, make_eval, starts, tc.eval_batch_size)
            a_log = [v for k, v in param_pack.flatten(mesh.to_host(state.params)).items() if k.endswith("/A_log")]
            curve.append({"step": n, "val_loss": ev["loss"], "a_log_mean": float(np.mean([a.mean() for a in a_log]))})
    return curve


def bench_no_decay(
    config: ml_collections.ConfigDict, seeds: int, steps: int, eval_windows: int, log: Callable[[str], None]
) -> dict:
    """Both arms' curves for `seeds` seeds (each arm of a seed from the same init and batches)."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.train.steps = steps  # the schedule's length
    family = models.family_of(config.model)
    data = corpus.load(config.data, config.model.seq_len)
    arms = {"A_log, D not decayed (official)": family, "A_log decayed (every matrix)": DecayEveryMatrix(family)}
    out = {"config": config.name, "steps": steps, "eval_windows": eval_windows, "arms": {}}
    for label, arm in arms.items():
        out["arms"][label] = [_curve(config, arm, data, seed, steps, eval_windows) for seed in range(seeds)]
        finals = [c[-1]["val_loss"] for c in out["arms"][label]]
        log(f"decay   {config.name} {label}: val loss after {steps} steps {', '.join(f'{v:.4f}' for v in finals)}")
    return out
