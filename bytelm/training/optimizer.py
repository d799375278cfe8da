"""The optimizer and its learning-rate schedule, from `config.train`.

    train.optimizer  'adamw': AdamW on every leaf (weight decay on the leaves the family decays:
                     the matrices, less any it exempts, such as Mamba's A_log)
                     'muon': Muon (optax.contrib) on the family's hidden matrices, AdamW on the rest
                     (`leaf_groups`; weight decay on Muon's matrices only)
    train.schedule   'cosine': linear warm-up, cosine decay to `min_lr` at `steps`
                     'wsd': linear warm-up, stable at `lr`, linear decay to `min_lr` over the last
                     `decay_fraction` of the steps (warmup-stable-decay)
    train.muon_ns_coeffs  Muon's Newton-Schulz polynomials, `muon_ns_steps` of them: 'standard' (one
                     quintic at every step) or 'polar_express' (one per step: fewer steps do)
    train.lr_multiplier  '' (every leaf at the rates above), or one factor per stage of the family's
                     hierarchy, outermost first (H-Net's lr_multiplier, '2,1'): each leaf's rates
                     times its stage's factor (`Family.stage`)

Muon's leaves follow the same schedule shape, scaled from `lr` to `muon_lr`. Which leaf is a hidden
matrix and which takes weight decay is the model family's to say (`bytelm.models.family.Family`). The
optimizer state is a pytree like any other, so checkpoints and resume treat both optimizers alike.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax
from optax import contrib

from bytelm.errors import ConfigError
from bytelm.models.family import Family

OPTIMIZERS = ("adamw", "muon")
SCHEDULES = ("cosine", "wsd")

# Keller Jordan's quintic, the same at every Newton-Schulz step (modded-nanogpt's first Muon; optax's default).
_STANDARD = (3.4445, -4.7750, 2.0315)
# Polar Express (Amsel et al. 2025, arXiv:2505.16932): one quintic per Newton-Schulz step, each chosen
# greedily for the interval the singular values are in by then, so the first k rows are the best k-step
# sequence. These are modded-nanogpt's (its train_gpt.py), made for inputs scaled by 1/(1.02·‖X‖_F):
# optax scales by 1/‖X‖_F, so the first row takes the 1.02 in (f is odd: f(X/s) = Σ c_i/s^(2i+1) X^(2i+1)).
_POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)
_PE_SAFETY = 1.02
NS_COEFFS = ("standard", "polar_express")


def check(tc: ml_collections.ConfigDict) -> None:
    """One-line `ConfigError`s for an unknown optimizer, schedule or Newton-Schulz form, Polar Express
    steps it has no coefficients for, or a WSD decay outside (0, 1]."""
    if tc.optimizer not in OPTIMIZERS:
        raise ConfigError(f"train.optimizer={tc.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    if tc.schedule not in SCHEDULES:
        raise ConfigError(f"train.schedule={tc.schedule!r}: choose one of {', '.join(SCHEDULES)}")
    coeffs = tc.get("muon_ns_coeffs", "standard")
    if coeffs not in NS_COEFFS:
        raise ConfigError(f"train.muon_ns_coeffs={coeffs!r}: choose one of {', '.join(NS_COEFFS)}")
    if coeffs == "polar_express" and not 1 <= tc.muon_ns_steps <= len(_POLAR_EXPRESS):
        raise ConfigError(
            f"train.muon_ns_steps={tc.muon_ns_steps}: Polar Express has coefficients for 1 to "
            f"{len(_POLAR_EXPRESS)} steps; choose one of those, or train.muon_ns_coeffs=standard"
        )
    if tc.schedule == "wsd" and not 0 < tc.decay_fraction <= 1:
        raise ConfigError(f"train.decay_fraction={tc.decay_fraction} must be in (0, 1] for the wsd schedule")


def stage_multipliers(tc: ml_collections.ConfigDict, family: Family) -> tuple[float, ...]:
    """`train.lr_multiplier` read: one factor per stage of `family`'s models, outermost first; () when
    it is unset. One-line `ConfigError`s for anything else."""
    spec = str(tc.get("lr_multiplier", "")).strip()
    if not spec:
        return ()
    n = family.stages
    hint = f"give {n} positive number{'s, outermost stage first' if n > 1 else ''}, e.g. {','.join(['1'] * n)!r}"
    try:
        factors = tuple(float(f) for f in spec.split(","))
    except ValueError:
        raise ConfigError(f"train.lr_multiplier={spec!r} is not a list of numbers: {hint}") from None
    if len(factors) != family.stages:
        raise ConfigError(
            f"train.lr_multiplier={spec!r} gives {len(factors)} factors, but a {family.name} model has "
            f"{family.stages} stage{'s' if family.stages > 1 else ''}: {hint}"
        )
    if not all(math.isfinite(f) and f > 0 for f in factors):
        raise ConfigError(f"train.lr_multiplier={spec!r} has a factor that is not positive: {hint}")
    return factors


def _by_stage(factors: tuple[float, ...], family: Family) -> optax.GradientTransformation:
    """Each leaf's update times its stage's factor: the same as multiplying that leaf's learning rates
    (AdamW's decoupled weight decay, which the rate multiplies, scales with them, as in a PyTorch
    parameter group with its own `lr`, which is how H-Net applies its multipliers)."""

    def update(updates, state, params=None):
        def scale(path, u):
            factor = factors[family.stage(leaf_keys(path))]
            return u if factor == 1.0 else u * factor

        return jax.tree_util.tree_map_with_path(scale, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def lr_schedule(tc: ml_collections.ConfigDict, peak: float | None = None) -> optax.Schedule:
    """The learning rate after `count` updates: linear warm-up to `peak` (default `lr`) over
    `warmup_steps`, then `tc.schedule`'s decay to `min_lr · peak / lr` at `steps`.

    `count` is the number of updates already applied, so the first update uses peak/warmup_steps
    rather than 0 (a zero first step would waste a step and a batch).
    """
    peak = tc.lr if peak is None else peak
    floor = tc.min_lr * peak / tc.lr if tc.lr else 0.0
    warmup = max(int(tc.warmup_steps), 0)
    steps = int(tc.steps)
    decay_start = warmup if tc.schedule == "cosine" else max(warmup, steps - math.ceil(tc.decay_fraction * steps))
    decay = max(steps - decay_start, 1)

    def schedule(count: jax.Array) -> jax.Array:
        count = jnp.asarray(count, jnp.float32)
        warm = peak * (count + 1) / max(warmup, 1)
        progress = jnp.clip((count - decay_start) / decay, 0.0, 1.0)
        if tc.schedule == "cosine":
            after = floor + 0.5 * (peak - floor) * (1 + jnp.cos(jnp.pi * progress))
        else:  # stable at the peak until decay_start, then a straight line to the floor
            after = peak + (floor - peak) * progress
        return jnp.where(count < warmup, warm, after)

    return schedule


def logged_rates(tc: ml_collections.ConfigDict):
    """count → the learning rates a step's record logs: `lr`, the schedule of `train.lr` (every leaf
    under AdamW, the non-matrix leaves under Muon) and, under Muon, `muon_lr` (its matrices')."""
    rates = {"lr": lr_schedule(tc)}
    if tc.optimizer == "muon":
        rates["muon_lr"] = lr_schedule(tc, tc.muon_lr)
    return lambda count: {name: rate(count) for name, rate in rates.items()}


def leaf_keys(path: tuple) -> tuple[str, ...]:
    """A `tree_flatten_with_path` path as its keys: ('params', 'h_0', 'attn', 'qkv', 'kernel')."""
    return tuple(str(getattr(k, "key", k)) for k in path)


def _grouped(params, group) -> dict:
    """Leaf paths ('a/b/c') by `group(keys, shape)`, in the tree's order."""
    groups: dict = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = leaf_keys(path)
        groups.setdefault(group(keys, leaf.shape), []).append("/".join(keys))
    return groups


def leaf_groups(params, family: Family) -> dict[str, list[str]]:
    """`{'muon': [...], 'adamw': [...]}`: which optimizer updates each leaf (paths as 'a/b/c') under
    `train.optimizer='muon'`."""
    groups = _grouped(params, lambda keys, shape: "muon" if family.hidden_matrix(keys, shape) else "adamw")
    return {"muon": groups.get("muon", []), "adamw": groups.get("adamw", [])}


def stage_groups(params, family: Family) -> list[list[str]]:
    """The leaves of each stage (paths as 'a/b/c'), outermost first."""
    groups = _grouped(params, lambda keys, shape: family.stage(keys))
    return [groups.get(i, []) for i in range(family.stages)]


def decay_mask(params, family: Family):
    """True for the leaves AdamW's weight decay applies to, as the family says."""
    return jax.tree_util.tree_map_with_path(lambda path, p: family.decays(leaf_keys(path), p.shape), params)


def _adamw(tc: ml_collections.ConfigDict, family: Family) -> optax.GradientTransformation:
    return optax.adamw(
        lr_schedule(tc),
        b1=tc.beta1,
        b2=tc.beta2,
        weight_decay=tc.weight_decay,
        mask=lambda params: decay_mask(params, family),
    )


def ns_coefficients(tc: ml_collections.ConfigDict) -> tuple:
    """Muon's Newton-Schulz coefficients as optax takes them: one (a, b, c) for every step
    ('standard': optax's default quintic), or one row per step ('polar_express', `muon_ns_steps` rows)."""
    if tc.get("muon_ns_coeffs", "standard") == "standard":
        return _STANDARD
    (a, b, c), rest = _POLAR_EXPRESS[0], _POLAR_EXPRESS[1 : tc.muon_ns_steps]
    s = _PE_SAFETY
    return ((a / s, b / s**3, c / s**5), *rest)


def _muon(tc: ml_collections.ConfigDict, family: Family, device_mesh=None) -> optax.GradientTransformation:
    # optax's Muon updates a leaf with (Nesterov) AdamW where the dimension numbers give None. Weight
    # decay is for Muon's matrices only: the AdamW leaves (embeddings, head, norms, biases) are not
    # decayed, as in modded-nanogpt.
    stacked = lambda tree: {  # Muon's stacks are [k, m, n]: k independent matrices, as optax vmaps them
        "stacks": {key: contrib.MuonDimensionNumbers(reduction_axis=1, output_axis=2) for key in tree["stacks"]},
        "others": [None] * len(tree["others"]),
    }
    muon = contrib.muon(
        lr_schedule(tc, tc.muon_lr),
        ns_coeffs=ns_coefficients(tc),
        beta=tc.muon_beta,
        ns_steps=tc.muon_ns_steps,
        weight_decay=tc.weight_decay,
        adam_learning_rate=lr_schedule(tc),
        adam_b1=tc.beta1,
        adam_b2=tc.beta2,
        adam_weight_decay=0.0,
        muon_weight_dimension_numbers=stacked,
    )
    return on_stacks(muon, family, device_mesh)


def _stack(tree, family: Family, device_mesh=None) -> dict:
    """`{'stacks': {'MxN': [k, M, N]}, 'others': [leaf, ...]}`: the hidden matrices stacked by shape
    (in the tree's order), the other leaves as they are. With a mesh whose `data` axis divides k, each
    stack is split over that axis, so each device orthogonalises its share of the matrices."""
    stacks: dict[str, list] = {}
    others = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if family.hidden_matrix(leaf_keys(path), leaf.shape):
            stacks.setdefault("x".join(map(str, leaf.shape)), []).append(leaf)
        else:
            others.append(leaf)
    out = {key: jnp.stack(leaves) for key, leaves in stacks.items()}
    n = device_mesh.shape["data"] if device_mesh is not None else 1
    if n > 1:
        split = jax.sharding.NamedSharding(device_mesh, jax.sharding.PartitionSpec("data"))
        out = {k: jax.lax.with_sharding_constraint(v, split) if v.shape[0] % n == 0 else v for k, v in out.items()}
    return {"stacks": out, "others": others}


def _unstack(stacked: dict, like, family: Family):
    """The tree `like` with its leaves taken back out of `_stack`'s layout."""
    taken = {key: iter(list(stack)) for key, stack in stacked["stacks"].items()}
    others = iter(stacked["others"])
    paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    leaves = [
        next(taken["x".join(map(str, leaf.shape))])
        if family.hidden_matrix(leaf_keys(path), leaf.shape)
        else next(others)
        for path, leaf in paths
    ]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def on_stacks(inner: optax.GradientTransformation, family: Family, device_mesh=None) -> optax.GradientTransformation:
    """`inner` applied to `_stack`'s layout of the parameters: one Newton-Schulz iteration per stack of
    same-shaped matrices instead of one per matrix, split over the mesh's `data` devices (on a
    replicated state every device would otherwise orthogonalise every matrix). The state is kept in
    the stacked layout; the updates come back in the parameters' own."""

    def init(params):
        return inner.init(_stack(params, family))

    def update(grads, state, params=None):
        stacked_params = None if params is None else _stack(params, family)
        updates, state = inner.update(_stack(grads, family, device_mesh), state, stacked_params)
        return _unstack(updates, grads, family), state

    return optax.GradientTransformation(init, update)


def make_optimizer(tc: ml_collections.ConfigDict, family: Family, device_mesh=None) -> optax.GradientTransformation:
    """`train.optimizer` with `train.schedule` for a model of `family` (`bytelm.models.family_of`), after
    global-norm clipping (`grad_clip`, 0 = off), its updates scaled per stage by `train.lr_multiplier`.
    `device_mesh` (Muon only) splits the orthogonalisation of the hidden matrices over its `data` axis."""
    check(tc)
    opt = _adamw(tc, family) if tc.optimizer == "adamw" else _muon(tc, family, device_mesh)
    factors = stage_multipliers(tc, family)
    if factors:
        opt = optax.chain(opt, _by_stage(factors, family))
    return optax.chain(optax.clip_by_global_norm(tc.grad_clip), opt) if tc.grad_clip > 0 else opt
