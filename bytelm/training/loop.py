"""Training: corpus → windows → jitted optimizer steps (AdamW or Muon) → evaluations → run directory.

`train_and_evaluate(config, workdir)` is the whole job; `launch/train.py` only parses flags and
calls it. It reads as its steps: check the config, build the job (model, data, mesh, steps), open
the workdir, start fresh or resume, train, and finish (probe, pack, summary, sample, log files).
The state passes explicitly through a jitted, donated step; randomness comes only from explicit
keys (the init) and from (data seed, step) for the windows, so a run is reproducible.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bytelm import models
from bytelm.artifacts import param_pack, run_dir, train_log
from bytelm.atomic_io import atomic_write_json
from bytelm.data import batches, corpus
from bytelm.errors import Stopped
from bytelm.interop import export
from bytelm.parallel import mesh, processes, runtime
from bytelm.reporting import plots, probe
from bytelm.sampling.decoders import sample_text
from bytelm.sampling.settings import SampleSettings
from bytelm.training import checkpoints, checks, evaluation, history, optimizer, step, workdir
from bytelm.training.background import BackgroundCompile
from bytelm.training.progress import Progress
from bytelm.training.signals import StopSignals
from bytelm.training.workdir import WorkdirLock


@dataclasses.dataclass(frozen=True)
class Job:
    """What a run needs that does not change while it trains."""

    config: ml_collections.ConfigDict
    workdir: Path
    model: object
    data: corpus.Corpus
    device_mesh: object
    kernels: dict
    train_step: Callable
    eval_step: Callable
    make_train: Callable
    make_eval: Callable
    bank: np.ndarray | None
    forward: Callable  # `models.seen_forward(model)`, for both probes
    lead: bool  # process 0: the one that prints and writes files
    processes: int

    def train_batch(self, n: int) -> batches.Batch:
        """The batch of training step `n` (1-based): a pure function of (data seed, n)."""
        c, seq_len = self.config, self.config.model.seq_len
        starts = batches.train_starts(self.data.train.size, seq_len, c.train.batch_size, n - 1, c.data.seed, self.bank)
        return self.make_train(starts)

    def eval_starts(self, final: bool) -> np.ndarray:
        """The validation windows: `data.eval_windows` of them, or `final_eval_windows` after the last step."""
        n = self.config.data.final_eval_windows if final else self.config.data.eval_windows
        return batches.eval_starts(self.data.val.piece_sizes, self.config.model.seq_len, n)


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
    checks.check_config(config)
    lead = jax.process_index() == 0
    if not lead:
        out = stream = _silent
    with contextlib.ExitStack() as run:
        # An existing workdir is held first: a second training refuses before it builds anything.
        lock = run.enter_context(WorkdirLock(Path(workdir), enabled=lead))
        model, kernels = _model(config, out)
        SampleSettings.from_config(config.sample).validate(config.sample.prompt)  # fail before training
        data = corpus.load(config.data, config.model.seq_len)  # (a bad corpus is said before any compile)
        # The weights to start from are read and checked before a workdir is made: a refusal leaves nothing.
        params = initial_params(config, model, jax.random.key(config.train.seed))  # the same in every process
        resume_step = _open(config, Path(workdir), data, overwrite, lead, lock)
        job, state, shardings = _build(config, Path(workdir), data, model, kernels, params, lead, out)
        tc = config.train
        with contextlib.ExitStack() as stack:
            mngr = stack.enter_context(checkpoints.open_manager(job.workdir, tc.keep_checkpoints))
            state, start, log, compiling = _begin(job, mngr, params, state, shardings, resume_step, out)
            del params  # (the state holds what training needs; the host copy can go)
            train_step = compiling.result()  # compiled for these shapes and shardings
            tokens_per_step = tc.batch_size * config.model.seq_len
            rates = jax.jit(optimizer.logged_rates(tc))  # for the log; op by op it is a dozen programs
            recorder = history.StepRecorder(log, rates, tokens_per_step, start, compiling.seconds)
            progress = stack.enter_context(Progress(tc.progress, tc.steps, tc.log_every, out, initial=start))
            signals = stack.enter_context(StopSignals())
            state = _train(job, train_step, state, start, log, mngr, recorder, progress, signals)
        train_wall = log.timing["wall_offset"] + time.perf_counter() - recorder.t0
        return _finish(job, state, log, train_wall, resume_step, t_start, out, stream)


def _silent(text: str) -> None:
    """Where the output of every process but the first goes."""


def _model(config, out) -> tuple[object, dict]:
    """The model (its config checked) and the kernels `runtime.fast_kernels` gets on this backend."""
    kernels, kernel_warning = runtime.model_kernels(config, models.family_of(config.model))
    if kernel_warning:
        out(f"warning: {kernel_warning}")
    return models.build(config.model, **kernels), kernels


def _open(config, path: Path, data: corpus.Corpus, overwrite: bool, lead: bool, lock) -> int | None:
    """Opens the workdir for `data` (process 0 first, then the others) under `lock`; returns the step to
    resume from (None for a fresh run)."""
    resume_step = workdir.open_workdir(config, path, overwrite, lead, lock)
    if jax.process_count() > 1:  # the others look at the workdir only after process 0 has prepared it
        processes.sync("workdir prepared")
        resume_step = resume_step if lead else workdir.open_workdir(config, path, False, lead, lock)
    workdir.check_not_complete(path, resume_step, config.train.steps)
    if resume_step is not None:
        corpus.check_unchanged(run_dir.read_corpus(path), data)  # its windows depend on the bytes
    if lead:
        run_dir.write_config(path, config)
        run_dir.write_corpus(path, data.manifest())
    return resume_step


def _build(config, path: Path, data, model, kernels: dict, params, lead: bool, out):
    """The job (steps, batch makers), the fresh state laid out on the mesh from the initial `params`,
    and its shardings; prints what was built."""
    tc, seq_len = config.train, config.model.seq_len
    device_mesh = mesh.make_mesh(config.runtime.mesh)
    family = models.family_of(config.model)
    opt = optimizer.make_optimizer(tc, family, device_mesh)
    state, shardings = step.place_state(params, opt, device_mesh, config.runtime.fsdp_min_size)
    train_step, eval_step = step.make_steps(
        model, opt, tc.batch_size, seq_len, tc.max_grad_norm_skip, device_mesh, shardings, dropout_seed=tc.seed
    )
    bank = None
    if config.data.windows:
        bank = batches.window_bank(data.train.size, seq_len, config.data.windows, config.data.seed)
    job = Job(
        config, path, model, data, device_mesh, kernels, train_step, eval_step,
        step.batch_maker(data.train, seq_len, tc.batch_size, device_mesh),
        step.batch_maker(data.val, seq_len, tc.eval_batch_size, device_mesh),
        bank, models.seen_forward(model), lead, jax.process_count(),
    )  # fmt: skip
    out(_describe(job, models.count_params(params)))
    for line in _optimizer_lines(tc, family, params):
        out(line)
    if data.checks:
        mb, s = sum(c["bytes"] for c in data.checks) / 1e6, sum(c["seconds"] for c in data.checks)
        kept = " (remembered for the next run)" if config.data.check_cache_dir else ""
        out(f"checked the corpus is UTF-8: {mb:,.1f} MB at {mb / max(s, 1e-9):,.0f} MB/s{kept}")
    return job, state, shardings


def _describe(job: Job, n_params: int) -> str:
    """The first line of a run: model, corpus, window and batch shapes, devices and kernels."""
    c, data, m = job.config, job.data, job.device_mesh
    b, seq_len = c.train.batch_size, c.model.seq_len
    return (
        f"{c.name}: {job.model.__class__.__name__}, {n_params:,} parameters; corpus {data.path}"
        + (f" ({len(data.files)} files)" if len(data.files) > 1 else "")
        + f" ({data.train.size:,} train + {data.val.size:,} val"
        + (f" + {data.test.size:,} test" if data.test.size else "")
        + f" bytes); windows [{b}, {seq_len + 1}] "
        f"→ x, y one-hot [{b}, {seq_len}, 256] float32"
        + (f"; each batch split over {m.size} devices" if m.size > 1 else "")
        + (f" in {job.processes} processes" if job.processes > 1 else "")
        + (f"; state sharded over fsdp={m.shape['fsdp']}" if m.shape["fsdp"] > 1 else "")
        + (f"; {job.kernels['attention']} attention, {job.kernels['compute_dtype']} matmuls" if job.kernels else "")
    )


def _optimizer_lines(tc, family, params) -> list[str]:
    """What the optimizer does to which leaves, where it is more than one rule for all: Muon's matrices
    and the per-stage learning-rate factors."""
    lines = []
    if tc.optimizer == "muon":
        groups = optimizer.leaf_groups(params, family)
        lines.append(
            f"optimizer muon ({tc.muon_ns_steps} {tc.get('muon_ns_coeffs', 'standard')} Newton-Schulz steps) on "
            f"{len(groups['muon'])} hidden matrices ({_span(groups['muon'])}); adamw on the "
            f"other {len(groups['adamw'])} leaves ({_span(groups['adamw'])})"
        )
    factors = optimizer.stage_multipliers(tc, family)
    if factors:
        stages = enumerate(zip(factors, optimizer.stage_groups(params, family), strict=True))
        lines.append(
            "learning rates " + "; ".join(f"× {f:g} on stage {i} ({len(g)} leaves: {_span(g)})" for i, (f, g) in stages)
        )
    return lines


def _span(paths: list[str]) -> str:
    """A few of `paths`, for a line: the first three and a count of the rest."""
    shown = ", ".join(p.removeprefix("params/") for p in paths[:3])
    return shown + (f", … {len(paths) - 3} more" if len(paths) > 3 else "")


def initial_params(config, model, key: jax.Array) -> dict:
    """A fresh init from `key`, or the weights at `train.init_params` (a pack, or a transformers folder
    that `launch.export` wrote) checked against the model."""
    if config.train.init_params:
        expected = models.abstract_variables(model)
        return jax.tree_util.tree_map(jnp.asarray, export.load_weights(config.train.init_params, expected))
    return models.init_variables(model, key)


def _begin(job: Job, mngr, params, state, shardings, resume_step: int | None, out):
    """A fresh run's probe and step-0 evaluation, or the state and history of the checkpoint to resume;
    the train step compiles on a side thread meanwhile. Returns (state, its step, history, the compile)."""
    if resume_step is not None:
        # Restored straight into this run's layout, whatever the layout it was saved from.
        restored, meta = checkpoints.restore(mngr, resume_step, state, shardings)
        # The restored tree has the template's leaves; rebuild it with the template's exact types.
        state = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(state), jax.tree_util.tree_leaves(restored))
        start = int(mesh.to_host(state.step))
        compiling = BackgroundCompile(job.train_step, state, job.train_batch(start + 1))
        out(f"resuming from the checkpoint at step {start} in {job.workdir / run_dir.CHECKPOINT_DIR}")
        return state, start, history.History.from_meta(meta), compiling
    tc = job.config.train
    compiling = BackgroundCompile(job.train_step, state, job.train_batch(1))
    log = history.History()
    # On the initial parameters as every process has them (the state's may be split over processes).
    log.probes["before"] = evaluation.run_probe(
        job.forward, params, job.data.val, job.config.model.seq_len, tc.probe_positions
    )
    out(probe.format_report(log.probes["before"], "probe before training"))
    ev0 = evaluation.as_validation(
        evaluation.evaluate(job.eval_step, state.params, job.make_eval, job.eval_starts(False), tc.eval_batch_size)
    )
    log.evaluations.append({"step": 0, **ev0})
    out(f"step      0  val_loss {ev0['val_loss']:.4f} ± {ev0['val_loss_stderr']:.4f}")
    return state, 0, log, compiling


def _train(job: Job, train_step, state, start: int, log, mngr, recorder, progress, signals):
    """Steps from the state's step to `train.steps`: each step is dispatched before the previous
    step's metrics are read, so the devices never wait on logging. Evaluates, checkpoints and stops
    on a signal at step boundaries; returns the final state."""
    tc = job.config.train
    pending = None
    for n in range(start + 1, tc.steps + 1):
        state, metrics = train_step(state, job.train_batch(n))
        if pending is not None:
            progress.update(recorder.record(*pending, mngr.latest_step))
        pending = (n, metrics)
        evaluate_now = n % tc.eval_every == 0 or n == tc.steps
        checkpoint_now = (tc.checkpoint_every and n % tc.checkpoint_every == 0) or n == tc.steps
        # Every process must stop at the same step (the save is collective): they agree on it.
        stop = signals.received if job.processes == 1 else processes.any_process(signals.received is not None)
        if evaluate_now or checkpoint_now or stop:
            progress.update(recorder.record(*pending, mngr.latest_step))  # a checkpoint never holds a diverged state
            pending = None
        if evaluate_now:
            _evaluate(job, state, log, progress, n)
        if checkpoint_now or stop:
            checkpoints.save(mngr, n, state, log.to_meta())
        if stop and n < tc.steps:
            _stop(job, n, signals.received or signal.SIGTERM)  # (another process may have received it)
        if evaluate_now or checkpoint_now:
            recorder.pause()  # evaluation and saving time is not training time
    return state


def _evaluate(job: Job, state, log, progress, n: int) -> None:
    """The evaluation after step `n`: the periodic windows, or the final set after the last step."""
    tc, final = job.config.train, n == job.config.train.steps
    if final and job.lead:
        plots.preload()  # matplotlib's imports run while the devices evaluate
    ev = evaluation.as_validation(
        evaluation.evaluate(job.eval_step, state.params, job.make_eval, job.eval_starts(final), tc.eval_batch_size)
    )
    log.evaluations.append({"step": n, **ev})
    progress.write(
        f"step {n:>6}  val_loss {ev['val_loss']:.4f} ± {ev['val_loss_stderr']:.4f}  ({ev['val_bpb']:.3f} bits/byte)"
    )
    if tc.plot_every_eval and job.lead:
        partial = train_log.make_log(job.config.name, log.records, log.evaluations, log.probes, {}, None, {})
        plots.write(job.workdir / run_dir.PLOT_FILE, [(job.workdir.resolve().name, partial)])


def _stop(job: Job, n: int, by: signal.Signals) -> None:
    raise Stopped(
        f"stopped by {by.name} after step {n}; checkpoint saved in "
        f"{job.workdir / run_dir.CHECKPOINT_DIR}: run the same command again to resume",
        128 + by.value,
    )


def _finish(job: Job, state, log, train_wall: float, resume_step, t_start: float, out, stream) -> dict:
    """After the last step: the probe, the pack, the summary, the sample and the log files."""
    c = job.config
    final_params = mesh.to_host(state.params)  # whole, gathered from every shard
    log.probes["after"] = evaluation.run_probe(
        job.forward, final_params, job.data.val, c.model.seq_len, c.train.probe_positions
    )
    out(probe.format_report(log.probes["after"], "probe after training"))
    if job.lead:
        param_pack.save_pack(job.workdir / run_dir.PARAMS_FILE, final_params, c.model.to_dict())
    n_params = models.count_params(final_params)
    summary = history.summarize(log, n_params, c.train.steps, c.train.batch_size * c.model.seq_len, train_wall)
    summary["resumed_from_step"] = resume_step
    summary["optimizer"] = {"name": c.train.optimizer, "schedule": c.train.schedule}
    if c.train.optimizer == "muon":
        # which leaf each optimizer updates
        summary["optimizer"] |= optimizer.leaf_groups(final_params, models.family_of(c.model))
    summary["wall_s"] = time.perf_counter() - t_start
    out(history.summary_line(summary))
    sample = _final_sample(c, final_params, out, stream) if job.lead and c.sample.generate > 0 else None
    summary["wall_s"] = time.perf_counter() - t_start
    doc = train_log.make_log(
        c.name, log.records, log.evaluations, log.probes, summary, sample, {"config": c.name, "params": n_params}
    )
    if job.processes > 1:
        processes.sync("training done")  # no process leaves (and shuts the job down) before the others
    if job.lead:
        _write_log_files(job.workdir, doc, out)
    return summary


def _final_sample(config, params, out, stream) -> dict:
    """The sample after training, streamed as it is drawn; the default kernels, whatever trained, so
    that it is the text `launch.sample` gives from the pack."""
    settings = SampleSettings.from_config(config.sample)
    out(f"sample (prompt {config.sample.prompt!r}, {settings.generate} bytes):")
    stream(config.sample.prompt)
    text = sample_text(
        models.build(config.model),
        params,
        config.sample.prompt,
        settings,
        on_text=stream,
        decode=config.sample.decode,
        stream_chunk=config.sample.stream_chunk,
    )
    stream("\n")
    return {"prompt": config.sample.prompt, "generated": text, "settings": dict(config.sample.to_dict())}


def _write_log_files(path: Path, doc: dict, out) -> None:
    atomic_write_json(path / run_dir.LOG_FILE, doc)
    plots.write(path / run_dir.PLOT_FILE, [(path.resolve().name, doc)])
    written = (run_dir.CONFIG_FILE, run_dir.PARAMS_FILE, run_dir.LOG_FILE, run_dir.PLOT_FILE)
    out("wrote " + ", ".join(str(path / f) for f in written))
