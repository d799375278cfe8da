"""The selective scan of Mamba (Gu & Dao 2023, Algorithm 2), in four forms that compute the same thing.

Per channel the state evolves as

    h_t = exp(Δ_t·A) ⊙ h_{t−1} + (Δ_t·B_t)·x_t,      y_t = C_t·h_t + D ⊙ x_t,      h_{−1} = 0

(zero-order hold for A, Euler for B, as the reference implementation). Symbols: b batch, l length,
d = d_inner channels, n = d_state, Δ (dt) the positive step size.

    sequential  one `ssm_step` per position with `jax.lax.scan`, differentiated by autodiff: the
                obviously-correct reference every other form is tested against
    fused       the same loop, with a hand-written backward pass (the adjoint recurrence)
    parallel    `jax.lax.associative_scan` over the (exp(Δ·A), (Δ·B)·x) pairs of every position
    chunked     associative scans inside chunks of positions, the state carried between them

Internally every form works in the layout `[..., n, d]` (d last and contiguous), which on XLA:CPU
vectorises over the d channels rather than the few states (BENCHMARKS.md, Mamba training scan
shows the forms' speeds). `ssm_step` and `ssm_readout` are also what the model's one-token decoding
step runs, so training and sampling share one recurrence.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp

from bytelm.models.mamba import FUSED_UNROLL, SCAN_MODES


def discretise(x, dt, At, B):
    """exp(Δ·A) and (Δ·B)·x for one position (`x`, `dt` `[b, d]`, `B` `[b, n]` → `[b, n, d]`) or for
    every position (`[b, l, d]`, `[b, l, n]` → `[b, l, n, d]`). `At` is A transposed, `[n, d]`."""
    dA = jnp.exp(dt[..., None, :] * At)
    dBx = (dt * x)[..., None, :] * B[..., :, None]
    return dA, dBx


def ssm_step(h_BxNxD, x_BxD, dt_BxD, At_NxD, B_BxN):
    """One position of the recurrence: h_t from h_{t−1}, all `[b, n, d]`."""
    dA, dBx = discretise(x_BxD, dt_BxD, At_NxD, B_BxN)
    return dA * h_BxNxD + dBx


def ssm_readout(h_BxNxD, C_BxN):
    """C_t·h_t per channel, `[b, d]` (the skip D ⊙ x_t is added by the caller)."""
    return jnp.sum(h_BxNxD * C_BxN[:, :, None], axis=1)


def _time_major(*arrays):
    return [jnp.swapaxes(a, 0, 1) for a in arrays]


def _scan_sequential(x, dt, At, B, C, h0):
    """The reference: one `ssm_step` per position with `jax.lax.scan`, autodiff'd."""

    def step(h, inputs):
        x_t, dt_t, B_t, C_t = inputs  # [b, d], [b, d], [b, n], [b, n]
        h = ssm_step(h, x_t, dt_t, At, B_t)
        return h, ssm_readout(h, C_t)

    h, y = jax.lax.scan(step, h0, _time_major(x, dt, B, C))
    return jnp.swapaxes(y, 0, 1), h


def _combine(left, right):
    """Composes two steps of h ↦ a·h + b (left first): the associative operator of the scan."""
    a_l, b_l = left
    a_r, b_r = right
    return a_r * a_l, a_r * b_l + b_r


def _scan_parallel(x, dt, At, B, C, h0):
    """`jax.lax.associative_scan` over (exp(Δ·A), (Δ·B)·x) pairs; materialises `[b, l, n, d]`."""
    dA, dBx = discretise(x, dt, At, B)
    dBx = dBx.at[:, 0].add(dA[:, 0] * h0)  # fold the incoming state into the first input
    _, h = jax.lax.associative_scan(_combine, (dA, dBx), axis=1)
    return jnp.sum(h * C[..., None], axis=2), h[:, -1]


def _scan_chunked(x, dt, At, B, C, h0, chunk: int):
    """Associative scans inside chunks of `chunk` positions, the state carried between them.

    The chunk body is rematerialised in the backward pass, so memory grows with `chunk`, not
    with `l × d × n`. The length is padded to a multiple of `chunk` with Δ = 0 (an identity step).
    """
    b, l, d = x.shape
    pad = (-l) % chunk
    if pad:
        x, dt, B, C = (jnp.pad(a, ((0, 0), (0, pad), (0, 0))) for a in (x, dt, B, C))
    nc = (l + pad) // chunk

    @jax.checkpoint
    def body(h, inputs):
        y_c, h = _scan_parallel(*inputs[:2], At, *inputs[2:], h)
        return h, y_c

    chunks = [jnp.swapaxes(a.reshape(b, nc, chunk, -1), 0, 1) for a in (x, dt, B, C)]
    h, y = jax.lax.scan(body, h0, chunks)
    return jnp.swapaxes(y, 0, 1).reshape(b, nc * chunk, d)[:, :l], h


# The fused form: the forward is the sequential loop, which keeps each step's `[b, n, d]` tensors in
# cache; the backward is a second, hand-written reverse loop (the adjoint recurrence
# g_t = exp(Δ_{t+1}·A)·g_{t+1} + C_t·ȳ_t) instead of autodiff's transpose of `lax.scan`, which is
# slower on XLA:CPU (BENCHMARKS.md, Mamba training scan: fused against sequential).
# Residuals: the inputs and h_{t−1} for every t, `[l, b, n, d]`.


def _fused_forward(x, dt, At, B, C, h0, unroll: int):
    """Time-major inputs → y `[l, b, d]`, h_{t−1} for every t `[l, b, n, d]` and the final h."""

    def step(h, inputs):
        x_t, dt_t, B_t, C_t = inputs
        h_next = ssm_step(h, x_t, dt_t, At, B_t)
        return h_next, (ssm_readout(h_next, C_t), h)

    h, (y, h_prev) = jax.lax.scan(step, h0, (x, dt, B, C), unroll=unroll)
    return y, h_prev, h


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _scan_fused(x, dt, At, B, C, h0, unroll: int):
    """Same contract as `_scan_sequential`, with the hand-written backward below."""
    return _scan_fused_fwd(x, dt, At, B, C, h0, unroll)[0]


def _scan_fused_fwd(x, dt, At, B, C, h0, unroll: int):
    tm = _time_major(x, dt, B, C)
    y, h_prev, h = _fused_forward(tm[0], tm[1], At, tm[2], tm[3], h0, unroll)
    return (jnp.swapaxes(y, 0, 1), h), (tm, At, h_prev, h)


def _scan_fused_bwd(unroll: int, residuals, cotangents):
    (x, dt, B, C), At, h_prev, h_last = residuals
    gy, gh_last = cotangents

    def step(carry, inputs):
        g, h_t, gAt = carry  # g = the gradient reaching h_t from later positions
        x_t, dt_t, B_t, C_t, gy_t, hp_t = inputs
        gh = g + C_t[:, :, None] * gy_t[:, None, :]  # ∂L/∂h_t, [b, n, d]
        a = jnp.exp(dt_t[:, None, :] * At)
        g_dtA = gh * hp_t * a  # ∂L/∂(Δ_t·A)
        ghB = jnp.sum(gh * B_t[:, :, None], axis=1)  # [b, d]
        grads = (
            dt_t * ghB,  # x
            jnp.sum(g_dtA * At, axis=1) + x_t * ghB,  # Δ
            jnp.sum(gh * (dt_t * x_t)[:, None, :], axis=2),  # B
            jnp.sum(h_t * gy_t[:, None, :], axis=2),  # C
        )
        return (a * gh, hp_t, gAt + jnp.sum(g_dtA * dt_t[:, None, :], axis=0)), grads

    init = (gh_last, h_last, jnp.zeros_like(At))
    (gh0, _, gAt), (gx, gdt, gB, gC) = jax.lax.scan(
        step, init, (x, dt, B, C, jnp.swapaxes(gy, 0, 1), h_prev), reverse=True, unroll=unroll
    )
    gx, gdt, gB, gC = _time_major(gx, gdt, gB, gC)
    return gx, gdt, gAt, gB, gC, gh0


_scan_fused.defvjp(_scan_fused_fwd, _scan_fused_bwd)


def selective_scan(
    x, dt, A, B, C, D, *, mode: str = "parallel", chunk: int = 0, return_state: bool = False, unroll: int = FUSED_UNROLL
):
    """The selective scan `y_t = C_t·h_t + D ⊙ x_t` of the module docstring.

    Args:
      x, dt: `[b, l, d]` (dt already positive); A: `[d, n]`; B, C: `[b, l, n]`; D: `[d]`.
      mode: 'parallel' (`jax.lax.associative_scan`; with `chunk > 0`, inside chunks of that many
        positions), 'sequential' (a plain `jax.lax.scan`, the reference) or 'fused' (the same loop
        with a hand-written backward, `unroll` positions per loop iteration).
    Returns:
      y `[b, l, d]`, and the final state `[b, d, n]` if `return_state`.
    """
    b, l, d = x.shape
    n = A.shape[-1]
    chex.assert_shape([x, dt], (b, l, d))
    chex.assert_shape(A, (d, n))
    chex.assert_shape([B, C], (b, l, n))
    chex.assert_shape(D, (d,))
    h0 = jnp.zeros((b, n, d), jnp.result_type(x, dt, A))
    At = A.T
    if mode == "sequential":
        y, h = _scan_sequential(x, dt, At, B, C, h0)
    elif mode == "fused":
        y, h = _scan_fused(x, dt, At, B, C, h0, unroll)
    elif mode == "parallel" and chunk and chunk < l:
        y, h = _scan_chunked(x, dt, At, B, C, h0, chunk)
    elif mode == "parallel":
        y, h = _scan_parallel(x, dt, At, B, C, h0)
    else:
        raise ValueError(f"unknown scan mode {mode!r}: choose one of {', '.join(SCAN_MODES)}")
    y = y + D * x
    return (y, jnp.swapaxes(h, 1, 2)) if return_state else y
