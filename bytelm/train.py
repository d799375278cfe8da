"""Training: corpus → windows → jitted AdamW steps → evaluations → run directory.

`train_and_evaluate(config, workdir)` is the whole job; `launch/train.py` only parses flags and
calls it. The state passes explicitly through a jitted, donated step; randomness comes only from
explicit keys (the init) and from (data seed, step) for the windows, so a run is reproducible.
"""

from __future__ import annotations

import collections
import json
import math
import shutil
import signal
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from bytelm import batches, checkpoints, corpus, models, param_pack, plots, probe, run_dir, runtime, sampling, train_log
from bytelm import mesh as mesh_lib
from bytelm.atomic_io import atomic_write_json, json_safe
from bytelm.errors import BytelmError, ConfigError, RunDirError, Stopped

# Evaluation batches dispatched ahead of the one being read back: the host builds the next batch's
# one-hot tensors while the devices run this one (more would only hold more batches in memory).
EVAL_IN_FLIGHT = 1


class TrainingDiverged(BytelmError):
    """The loss or gradient norm became non-finite."""


class _StopSignals:
    """While active, SIGINT and SIGTERM ask the loop to stop after the current step (`received`);
    a second signal stops at once. The previous handlers come back on exit. Only the main thread
    can own signals, so elsewhere this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> _StopSignals:
        self.received: signal.Signals | None = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait
        self.received = signal.Signals(signum)

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


class TrainState(NamedTuple):
    """Everything a step changes. `step`: int32 scalar (updates done); `params`: `{'params': ...}`."""

    step: jax.Array
    params: dict
    opt_state: optax.OptState


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


def masked_nll(logits_BxLxV: jax.Array, y_BxLxV: jax.Array, mask_BxL: jax.Array) -> jax.Array:
    """Per-position negative log-likelihood in nats `[B, L]`, zero where the mask is 0."""
    logp = jax.nn.log_softmax(logits_BxLxV.astype(jnp.float32), axis=-1)
    return -jnp.sum(y_BxLxV * logp, axis=-1) * mask_BxL


def make_steps(
    model,
    optimizer,
    batch_size: int,
    seq_len: int,
    max_grad_norm_skip: float = 0.0,
    mesh=None,
    state_shardings=None,
):
    """The jitted train step (donating its state) and eval step for `model`.

    With `max_grad_norm_skip > 0`, a step whose loss or gradient norm is non-finite or whose gradient
    norm is above it leaves the parameters and optimizer state as they were (`metrics['skipped']`);
    the step counter still advances, so the next step sees the next batch.
    With a `mesh` (`bytelm.mesh`), batches are split over its devices and the state is laid out by
    `state_shardings` (a `TrainState` of shardings; default replicated): the steps get explicit
    shardings and XLA partitions them, inserting the collectives. Metrics and the eval step's
    per-window outputs come back replicated.
    """

    def loss_fn(params, batch: batches.Batch) -> jax.Array:
        nll = masked_nll(model.apply(params, batch.x), batch.y, batch.mask)
        return nll.sum() / jnp.maximum(batch.mask.sum(), 1.0)

    def train_step(state: TrainState, batch: batches.Batch) -> tuple[TrainState, dict]:
        batches.assert_batch(batch, batch_size, seq_len)  # fires at trace time, i.e. the first step
        loss, grads = jax.value_and_grad(loss_fn)(state.params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        if max_grad_norm_skip > 0:
            gn = metrics["grad_norm"]
            ok = jnp.isfinite(loss) & jnp.isfinite(gn) & (gn <= max_grad_norm_skip)
            keep = lambda new, old: jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, old)
            params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
            metrics["skipped"] = ~ok
        return TrainState(state.step + 1, params, opt_state), metrics

    def eval_step(params, batch: batches.Batch) -> tuple[jax.Array, jax.Array]:
        """Per-window NLL sums `[B]` and target counts `[B]`."""
        nll = masked_nll(model.apply(params, batch.x), batch.y, batch.mask)
        return nll.sum(axis=-1), batch.mask.sum(axis=-1)

    if mesh is None:
        return jax.jit(train_step, donate_argnums=0), jax.jit(eval_step)
    rep, split = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
    batch = batches.Batch(split, split, split)
    state_sh = state_shardings if state_shardings is not None else rep
    params_sh = state_shardings.params if state_shardings is not None else rep
    return (
        jax.jit(train_step, donate_argnums=0, in_shardings=(state_sh, batch), out_shardings=(state_sh, rep)),
        jax.jit(eval_step, in_shardings=(params_sh, batch), out_shardings=(rep, rep)),
    )


def place_state(params, optimizer, mesh, fsdp_min_size: int) -> tuple[TrainState, TrainState]:
    """A fresh `TrainState` from `params` laid out on `mesh` (`bytelm.mesh`), and its shardings
    (a `TrainState` of them, for `make_steps` and for restoring checkpoints)."""
    host_state = TrainState(np.zeros((), np.int32), params, optimizer.init(params))
    shardings = mesh_lib.state_shardings(mesh, host_state, fsdp_min_size)
    return mesh_lib.put(host_state, shardings), shardings


def batch_maker(ids: np.ndarray, seq_len: int, batch_size: int, mesh=None) -> Callable[[np.ndarray], batches.Batch]:
    """`make(starts)`: the batch of the windows at `starts` (`[batch_size]`), ready for the steps.

    Without a mesh it is the host batch. With one, this process builds only the rows its own
    devices hold and the result is the global array, split over the mesh."""
    if mesh is None:
        return lambda starts: batches.make_batch(ids, starts, seq_len)
    rows = mesh_lib.process_rows(mesh, batch_size)

    def make(starts: np.ndarray) -> batches.Batch:
        local = batches.make_batch(ids, starts[rows], seq_len)
        return batches.Batch(*(mesh_lib.put_rows(a, mesh, batch_size) for a in local))

    return make


class _BackgroundCompile:
    """Traces, lowers and compiles `train_step` for `args` on a side thread (`result()` waits for it).

    At start-up this is ~1.6 s of mostly single-threaded host work (warm cache); the step-0 evaluation
    runs on the devices meanwhile, so the two overlap instead of queueing. Only shapes and shardings
    of `args` are read: nothing is donated until the compiled step runs."""

    def __init__(self, train_step, *args):
        self.compiled, self.error, self.seconds = None, None, 0.0
        self.thread = threading.Thread(target=self._run, args=(train_step, args), daemon=True)
        self.thread.start()

    def _run(self, train_step, args) -> None:
        t = time.perf_counter()
        try:
            self.compiled = train_step.lower(*args).compile()
        except BaseException as e:  # re-raised on the caller's thread by result()
            self.error = e
        self.seconds = time.perf_counter() - t

    def result(self):
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.compiled


def check_config(config: ml_collections.ConfigDict) -> None:
    """Cross-field checks that no single module owns; raises a one-line `ConfigError`."""
    tc = config.train
    for name in ("steps", "batch_size", "eval_every", "eval_batch_size", "log_every"):
        if tc[name] < 1:
            raise ConfigError(f"train.{name} must be at least 1, got {tc[name]}")
    if tc.lr <= 0 or tc.min_lr < 0 or tc.min_lr > tc.lr:
        raise ConfigError(f"need 0 <= train.min_lr <= train.lr and lr > 0, got lr={tc.lr}, min_lr={tc.min_lr}")
    if tc.progress not in ("auto", "bar", "lines", "none"):
        raise ConfigError(f"train.progress must be auto, bar, lines or none, got {tc.progress!r}")
    if config.sample.decode not in sampling.DECODERS:
        raise ConfigError(f"sample.decode must be one of {', '.join(sampling.DECODERS)}, got {config.sample.decode!r}")
    if config.sample.stream_chunk < 1:
        raise ConfigError(f"sample.stream_chunk must be at least 1, got {config.sample.stream_chunk}")
    for name in ("windows", "eval_windows", "final_eval_windows"):
        if config.data[name] < 0:
            raise ConfigError(f"data.{name} must be >= 0, got {config.data[name]}")
    if tc.checkpoint_every < 0 or tc.keep_checkpoints < 1:
        raise ConfigError(
            f"need train.checkpoint_every >= 0 (0 = only at the end) and train.keep_checkpoints >= 1, got "
            f"{tc.checkpoint_every} and {tc.keep_checkpoints}"
        )
    mesh = mesh_lib.build(config.runtime.mesh)
    mesh_lib.check_batch(mesh, tc.batch_size, "train.batch_size")
    mesh_lib.check_batch(mesh, tc.eval_batch_size, "train.eval_batch_size")
    if not tc.max_grad_norm_skip >= 0:
        raise ConfigError(f"train.max_grad_norm_skip must be >= 0 (0 = off), got {tc.max_grad_norm_skip}")


class _Progress:
    """Progress as a tqdm bar (on a terminal) or as plain lines every `log_every` steps."""

    def __init__(self, mode: str, total: int, log_every: int, out: Callable[[str], None], initial: int = 0):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode, self.total, self.log_every, self.out, self.initial = mode, total, log_every, out, initial
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm  # a well-kept bar with ETA; only needed on a terminal

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
        self.t0 = time.perf_counter()

    def update(self, rec: dict) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{rec['loss']:.4f}", tok_s=f"{rec['tokens_per_s']:,.0f}", refresh=False)
        elif self.mode == "lines" and (rec["step"] % self.log_every == 0 or rec["step"] == self.total):
            done = rec["step"]
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / (done - self.initial) * (self.total - done) if done > self.initial else 0.0
            self.out(
                f"step {done:>6}/{self.total}  loss {rec['loss']:.4f}  lr {rec['lr']:.2e}  "
                f"{rec['tokens_per_s']:>8,.0f} tok/s  ETA {eta:5.0f}s"
            )

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            self.out(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def evaluate(
    eval_step, params, make: Callable[[np.ndarray], batches.Batch], starts: np.ndarray, batch_size: int
) -> dict:
    """Mean validation loss (nats per byte) over the windows at `starts`, with its standard error.

    `make` is a `batch_maker` for the validation split at `batch_size`."""
    sums, counts, in_flight = [], [], collections.deque()

    def collect() -> None:
        out, n = in_flight.popleft()
        s, c = mesh_lib.to_host(out)
        sums.append(s[:n])
        counts.append(c[:n])

    for i in range(0, starts.size, batch_size):
        chunk = starts[i : i + batch_size]
        # The last batch repeats its last window up to the fixed shape (one compile); the repeats'
        # per-window results are dropped in `collect`.
        batch = make(np.pad(chunk, (0, batch_size - chunk.size), mode="edge"))
        in_flight.append((eval_step(params, batch), chunk.size))
        if len(in_flight) > EVAL_IN_FLIGHT:
            collect()
    while in_flight:
        collect()
    s, c = np.concatenate(sums), np.concatenate(counts)
    loss = float(s.sum() / c.sum())
    per_window = s / np.maximum(c, 1)
    stderr = float(per_window.std(ddof=1) / math.sqrt(per_window.size)) if per_window.size > 1 else float("nan")
    return {
        "val_loss": loss,
        "val_bpb": loss / math.log(2),
        "val_loss_stderr": stderr,
        "windows": int(starts.size),
        "tokens": int(c.sum()),
    }


def run_probe(forward, params, ids: np.ndarray, seq_len: int, positions: int) -> dict:
    """The probe report on the first validation window; `forward` is the jitted `model.apply`."""
    b = batches.make_batch(ids, np.zeros(1, dtype=np.int64), seq_len)
    logits = forward(params, b.x)
    return probe.report(np.asarray(logits[0]), b.x[0].argmax(-1), b.y[0].argmax(-1), b.mask[0], positions)


def initial_params(config, model, key: jax.Array) -> dict:
    """A fresh init from `key`, or the pack at `train.init_params` checked against the model."""
    if config.train.init_params:
        expected = models.abstract_variables(model)
        return jax.tree_util.tree_map(jnp.asarray, param_pack.load_pack(config.train.init_params, expected))
    return models.init_variables(model, key)


def _open_workdir(config, workdir: Path, overwrite: bool, writer: bool = True) -> int | None:
    """Prepares `workdir` and returns the checkpoint step to resume from (None = a fresh run).

    `--overwrite` always starts over; otherwise, with `train.resume`, the latest checkpoint wins,
    provided the config matches the saved one in everything but `run_dir.RESUMABLE_FIELDS`.
    Only the `writer` (process 0 of a multi-process job) creates or clears anything.
    """
    if not overwrite and config.train.resume and workdir.is_dir():
        step = checkpoints.latest_step(workdir)
        if step is not None:
            current = json.loads(json.dumps(json_safe(config.to_dict())))  # as it would read back from disk
            diffs = run_dir.config_differences(run_dir.read_config(workdir).to_dict(), current)
            if diffs:
                raise ConfigError(
                    f"cannot resume {workdir}: its config differs in {'; '.join(diffs)} (use the saved values, "
                    "or start over with --config.train.resume=False --overwrite, or choose another --workdir)"
                )
            return step
    if not writer:
        return None
    workdir = run_dir.prepare(workdir, overwrite)
    if overwrite and (workdir / checkpoints.CHECKPOINT_DIR).exists():
        shutil.rmtree(workdir / checkpoints.CHECKPOINT_DIR)  # a new run must not resume the old one's steps
    return None


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    overwrite: bool = False,
    out: Callable[[str], None] = print,
    stream: Callable[[str], None] = lambda s: print(s, end="", flush=True),
) -> dict:
    """Trains `config` into `workdir`, resuming from its latest checkpoint; returns the summary.

    Progress goes through `out` (whole lines); the final sample streams through `stream`.
    SIGINT/SIGTERM stop after the current step with a checkpoint saved (`Stopped`).
    In a multi-process job (`jax.distributed`) every process calls this; only process 0 prints and
    writes files, and checkpoints are written by all of them together.
    """
    t_start = time.perf_counter()
    check_config(config)
    processes, writer = jax.process_count(), jax.process_index() == 0
    if not writer:
        out = stream = lambda s: None
    kernels, kernel_warning = runtime.model_kernels(config)
    if kernel_warning:
        out(f"warning: {kernel_warning}")
    model = models.build(config.model, **kernels)
    seq_len, tc = config.model.seq_len, config.train
    sample_settings = sampling.SampleSettings.from_config(config.sample)
    sample_settings.validate(config.sample.prompt)  # fail before training, not after
    data = corpus.load(config.data, seq_len)
    workdir = Path(workdir)
    resume_step = _open_workdir(config, workdir, overwrite, writer)
    if processes > 1:  # the others look at the workdir only after process 0 has prepared it
        mesh_lib.sync("workdir prepared")
        resume_step = resume_step if writer else _open_workdir(config, workdir, False, writer)
    if resume_step is not None and resume_step >= tc.steps:
        raise RunDirError(
            f"the run in {workdir} is already complete (checkpoint at step {resume_step} of {tc.steps}): raise "
            "--config.train.steps to train on, or start over with --overwrite"
        )
    if writer:
        run_dir.write_config(workdir, config)

    params = initial_params(config, model, jax.random.key(tc.seed))  # the same in every process
    n_params = models.count_params(params)
    optimizer = make_optimizer(tc)
    mesh = mesh_lib.build(config.runtime.mesh)
    state, shardings = place_state(params, optimizer, mesh, config.runtime.fsdp_min_size)
    train_step, eval_step = make_steps(model, optimizer, tc.batch_size, seq_len, tc.max_grad_norm_skip, mesh, shardings)
    make_train = batch_maker(data.train, seq_len, tc.batch_size, mesh)
    make_eval = batch_maker(data.val, seq_len, tc.eval_batch_size, mesh)
    mngr = checkpoints.manager(workdir, tc.keep_checkpoints)

    out(
        f"{config.name}: {model.__class__.__name__}, {n_params:,} parameters; corpus {data.path} "
        f"({data.train.size:,} train + {data.val.size:,} val bytes); windows [{tc.batch_size}, {seq_len + 1}] "
        f"→ x, y one-hot [{tc.batch_size}, {seq_len}, 256] float32"
        + (f"; each batch split over {mesh.size} devices" if mesh.size > 1 else "")
        + (f" in {processes} processes" if processes > 1 else "")
        + (f"; state sharded over fsdp={mesh.shape['fsdp']}" if mesh.shape["fsdp"] > 1 else "")
        + (f"; {kernels['attention']} attention, {kernels['compute_dtype']} matmuls" if kernels else "")
    )
    bank = None
    if config.data.windows:
        bank = batches.window_bank(data.train.size, seq_len, config.data.windows, config.data.seed)
    val_starts = batches.eval_starts(data.val.size, seq_len, config.data.eval_windows)
    # The final figure may take a larger sample than the periodic ones (0: the whole split).
    final_starts = batches.eval_starts(data.val.size, seq_len, config.data.final_eval_windows)
    forward = jax.jit(model.apply)  # one compilation for both probes
    train_starts = lambda step: batches.train_starts(  # noqa: E731 - the windows of `step` (1-based)
        data.train.size, seq_len, tc.batch_size, step - 1, config.data.seed, bank
    )

    if resume_step is None:
        start = 0
        compiling = _BackgroundCompile(train_step, state, make_train(train_starts(1)))
        probes = {"before": run_probe(forward, params, data.val, seq_len, tc.probe_positions)}
        out(probe.format_report(probes["before"], "probe before training"))
        ev0 = evaluate(eval_step, state.params, make_eval, val_starts, tc.eval_batch_size)
        evaluations = [{"step": 0, **ev0}]
        out(f"step      0  val_loss {ev0['val_loss']:.4f} ± {ev0['val_loss_stderr']:.4f}")
        records: list[dict] = []
        timing = {"train_seconds": 0.0, "compile_s": float("nan"), "wall_offset": 0.0, "skipped": 0}
    else:
        # Restored straight into this run's layout, whatever the layout it was saved from.
        restored, meta = checkpoints.restore(mngr, resume_step, state, shardings)
        # The restored tree has the template's leaves; rebuild it with the template's exact types.
        state = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(state), jax.tree_util.tree_leaves(restored))
        start = int(state.step)
        records, evaluations, probes, timing = meta["records"], meta["evaluations"], meta["probes"], meta["timing"]
        compiling = _BackgroundCompile(train_step, state, make_train(train_starts(start + 1)))
        out(f"resuming from the checkpoint at step {start} in {workdir / checkpoints.CHECKPOINT_DIR}")

    train_step = compiling.result()  # the compiled step, for these shapes and shardings
    compile_s = compiling.seconds
    tokens_per_step = tc.batch_size * seq_len
    progress = _Progress(tc.progress, tc.steps, tc.log_every, out, initial=start)
    schedule = lr_schedule(tc)
    t_train0 = time.perf_counter()
    t_last = time.perf_counter()

    def record(step: int, metrics: dict) -> None:
        nonlocal t_last
        m = mesh_lib.to_host(metrics)  # blocks on this step only; the next one is already queued
        now = time.perf_counter()
        dt, t_last = now - t_last, now
        if step == start + 1:
            # The first step of a process: compiling it (overlapped with the step-0 evaluation) and
            # its first run, which sets up the CPU kernels (~0.5 s).
            timing["compile_s"] = compile_s + dt
        else:
            timing["train_seconds"] += dt
        loss, gnorm = float(m["loss"]), float(m["grad_norm"])
        skipped = bool(m.get("skipped", False))
        if not skipped and not (math.isfinite(loss) and math.isfinite(gnorm)):
            progress.close()
            last = mngr.latest_step()
            raise TrainingDiverged(
                f"training diverged at step {step}: loss {loss}, grad norm {gnorm}; params.json and the last "
                f"good checkpoint ({'step ' + str(last) if last is not None else 'none yet'}) are untouched "
                "(try a lower --config.train.lr, or --config.train.max_grad_norm_skip to skip such steps)"
            )
        timing["skipped"] += skipped
        rec = {
            "step": step,
            "loss": loss,
            "lr": float(schedule(step - 1)),
            "grad_norm": gnorm,
            "tokens_per_s": tokens_per_step / dt,
            "wall_s": timing["wall_offset"] + now - t_train0,
        }
        if skipped:
            rec["skipped"] = True
        records.append(rec)
        progress.update(rec)

    def save_checkpoint(step: int) -> None:
        timing["wall_offset"] = records[-1]["wall_s"] if records else timing["wall_offset"]
        meta = {"records": records, "evaluations": evaluations, "probes": probes, "timing": timing}
        checkpoints.save(mngr, step, state, meta)

    pending = None
    with _StopSignals() as signals:
        for step in range(start + 1, tc.steps + 1):
            state, metrics = train_step(state, make_train(train_starts(step)))
            if pending is not None:
                record(*pending)
            pending = (step, metrics)
            evaluate_now = step % tc.eval_every == 0 or step == tc.steps
            checkpoint_now = (tc.checkpoint_every and step % tc.checkpoint_every == 0) or step == tc.steps
            # Every process must stop at the same step (the save is collective): they agree on it.
            stop = signals.received if processes == 1 else mesh_lib.any_process(signals.received is not None)
            if evaluate_now or checkpoint_now or stop:
                record(*pending)  # checks this step's loss: a checkpoint never holds a diverged state
                pending = None
            if evaluate_now:
                if step == tc.steps and writer:
                    plots.preload()  # matplotlib's imports run while the devices evaluate
                starts = final_starts if step == tc.steps else val_starts
                ev = {"step": step, **evaluate(eval_step, state.params, make_eval, starts, tc.eval_batch_size)}
                evaluations.append(ev)
                progress.write(
                    f"step {step:>6}  val_loss {ev['val_loss']:.4f} ± {ev['val_loss_stderr']:.4f}  "
                    f"({ev['val_bpb']:.3f} bits/byte)"
                )
                if tc.plot_every_eval and writer:
                    partial = train_log.build(config.name, records, evaluations, probes, {}, None, {})
                    plots.write(workdir / run_dir.PLOT_FILE, [(workdir.resolve().name, partial)])
            if checkpoint_now or stop:
                save_checkpoint(step)
            if stop and step < tc.steps:
                progress.close()
                by = signals.received or signal.SIGTERM  # (another process received it)
                raise Stopped(
                    f"stopped by {by.name} after step {step}; checkpoint saved in "
                    f"{workdir / checkpoints.CHECKPOINT_DIR}: run the same command again to resume",
                    128 + by.value,
                )
            if evaluate_now or checkpoint_now:
                t_last = time.perf_counter()  # evaluation and saving time is not training time
    progress.close()
    mngr.close()
    train_wall = time.perf_counter() - t_train0 + (timing["wall_offset"] if start else 0.0)

    final_params = mesh_lib.to_host(state.params)  # whole, gathered from every shard
    probes["after"] = run_probe(forward, final_params, data.val, seq_len, tc.probe_positions)
    out(probe.format_report(probes["after"], "probe after training"))
    if writer:
        param_pack.save_pack(workdir / run_dir.PARAMS_FILE, final_params, config.model.to_dict())

    last = records[-min(len(records), 50) :]
    timed_steps = max(len(records) - 1, 0)
    train_seconds, compile_s = timing["train_seconds"], timing["compile_s"]
    summary = {
        "params": n_params,
        "steps": tc.steps,
        "final_train_loss": statistics.fmean([r["loss"] for r in last if not r.get("skipped")] or [math.nan]),
        "final_train_loss_steps": len(last),
        "final_val_loss": evaluations[-1]["val_loss"],
        "final_val_loss_stderr": evaluations[-1]["val_loss_stderr"],
        "val_bpb": evaluations[-1]["val_bpb"],
        "tokens_per_s": timed_steps * tokens_per_step / train_seconds if train_seconds > 0 else float("nan"),
        "first_step_s": compile_s,
        "train_wall_s": train_wall,
        "wall_s": time.perf_counter() - t_start,
        "skipped_steps": timing["skipped"],
        "resumed_from_step": start if resume_step is not None else None,
    }
    out(
        f"summary: {n_params:,} params, {tc.steps} steps, train loss {summary['final_train_loss']:.4f} "
        f"(mean of last {len(last)}), val loss {summary['final_val_loss']:.4f} ({summary['val_bpb']:.3f} bits/byte), "
        f"{summary['tokens_per_s']:,.0f} tok/s, first step {compile_s:.1f}s, wall {summary['wall_s']:.1f}s"
        + (f", {timing['skipped']} steps skipped" if timing["skipped"] else "")
    )

    sample = None
    if sample_settings.generate > 0 and writer:  # the text is the same in every process: one writes it
        out(f"sample (prompt {config.sample.prompt!r}, {sample_settings.generate} bytes):")
        stream(config.sample.prompt)
        text = sampling.sample_text(
            # The default kernels, whatever trained: the same text `launch.sample` gives from the pack.
            models.build(config.model),
            final_params,
            config.sample.prompt,
            sample_settings,
            on_text=stream,
            decode=config.sample.decode,
            stream_chunk=config.sample.stream_chunk,
        )
        stream("\n")
        sample = {"prompt": config.sample.prompt, "generated": text, "settings": dict(config.sample.to_dict())}
    summary["wall_s"] = time.perf_counter() - t_start
    log = train_log.build(
        config.name, records, evaluations, probes, summary, sample, {"config": config.name, "params": n_params}
    )
    if processes > 1:
        mesh_lib.sync("training done")  # no process leaves (and shuts the job down) before the others
    if not writer:
        return summary
    atomic_write_json(workdir / run_dir.LOG_FILE, log)
    plots.write(workdir / run_dir.PLOT_FILE, [(workdir.resolve().name, log)])
    written = (run_dir.CONFIG_FILE, run_dir.PARAMS_FILE, run_dir.LOG_FILE, run_dir.PLOT_FILE)
    out("wrote " + ", ".join(str(workdir / f) for f in written))
    return summary
