"""One step of each family's training against numbers stored here (nanodo's regression test).

A failure means the function a run computes has changed: the init, the windows drawn for a step, the
model's forward pass, the loss, the gradient or the optimizer's update. If the change was meant (a new
init, a fixed bug), check that it is the only difference, update the numbers below and say why in the
commit; if it was not meant, the change broke reproducibility of every earlier run."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from bytelm import models
from bytelm.data import batches
from bytelm.training import optimizer, step
from conftest import load_config

# family → (the config's model changes, the loss of step 1, its gradient norm, the loss of step 2)
STORED = {
    "gpt2_tiny": ({"num_layers": 1, "seq_len": 32}, 5.554307460784912, 2.965536117553711, 5.542098522186279),
    "mamba_tiny": (
        {"num_layers": 1, "d_model": 32, "seq_len": 32},
        5.538328647613525,
        0.8163657784461975,
        5.532315731048584,
    ),
    "bigram": ({"seq_len": 32}, 5.545167922973633, 0.0942373052239418, 5.5447516441345215),
}


def _two_steps(name: str, changes: dict, corpus) -> tuple[float, float, float]:
    config = load_config(name)
    config.model.update(changes)
    tc, seq_len = config.train, config.model.seq_len
    model = models.build(config.model)
    opt = optimizer.make_optimizer(tc, models.family_of(config.model))
    params = models.init_variables(model, jax.random.key(tc.seed))
    state = step.TrainState(np.zeros((), np.int32), params, jax.jit(opt.init)(params))
    train_step = step.make_steps(model, opt, tc.batch_size, seq_len)[0]
    ids = np.frombuffer(corpus.read_bytes(), np.uint8)
    make = lambda n: batches.make_batch(
        ids, batches.train_starts(ids.size, seq_len, tc.batch_size, n, 0, None), seq_len
    )
    state, first = train_step(state, make(0))
    _, second = train_step(state, make(1))
    return float(first["loss"]), float(first["grad_norm"]), float(second["loss"])


@pytest.mark.parametrize("name", list(STORED))
def test_one_step_gives_the_stored_loss_gradient_norm_and_next_loss(name, tiny_shakespeare):
    changes, *stored = STORED[name]
    got = _two_steps(name, changes, tiny_shakespeare)
    assert got == pytest.approx(stored, rel=2e-5), (
        f"{name}: one training step now gives (loss, grad norm, next loss) = {got}, stored {tuple(stored)}: "
        "the function a run computes has changed (see this module's docstring)"
    )
