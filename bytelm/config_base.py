"""The config sections of a run: the model (from its family), data, train, sample and runtime, and how
config files load.

Config files in `configs/` build on these and set what differs. Every field here is a knob a user
can override from the command line (`--config.train.steps=300`); fields that mean "not set" are
empty strings rather than None, because ml_collections cannot override a None default. Where a
default was chosen by measuring, the comment names the section of BENCHMARKS.md that shows it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import ml_collections

from bytelm import models
from bytelm.data.download import DEFAULT_DATA_DIR
from bytelm.errors import ConfigError


def load_config_file(path: str | os.PathLike) -> ml_collections.ConfigDict:
    """`get_config()` of the config file at `path`, loaded by path (as `--config=` does), without
    touching `sys.path` or `sys.modules`."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(f"_bytelm_config_{path.stem}", path)
    if spec is None or not path.is_file():
        raise ConfigError(f"config file {path} does not exist: pass one of configs/*.py, e.g. configs/gpt2_tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def model_config(name: str, **values) -> ml_collections.ConfigDict:
    """`config.model` for the family `name` (`bytelm.models.FAMILIES`): `name`, then every field of its
    config, the family's defaults for those not in `values` (so each is a flag, and in config.json).
    An unknown field or a missing size is a one-line `ConfigError`."""
    return ml_collections.ConfigDict(models.model_config(name, **values))


def data_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.corpus = "tiny_shakespeare"  # a known corpus (bytelm.data.download.KNOWN_CORPORA), fetched into `dir`
    c.file = ""  # your own corpus: a file, a folder of shards or a glob; wins over `corpus` when set
    c.dir = DEFAULT_DATA_DIR  # where known corpora land
    # 'text' (checked to be UTF-8), 'bytes' (any bytes, unchecked); '' = the known corpus's own, text for `file`
    c.format = ""
    # Where passed UTF-8 checks are remembered (by path, size and mtime), so a large corpus is checked
    # once; '' = check at every start. Never the corpus's folder, which may be read-only.
    c.check_cache_dir = "data/checks"
    # Splits by fraction, of each file: [train | val | test], the last 10% of its bytes for validation.
    c.val_fraction = 0.1
    c.test_fraction = 0.0
    # Splits by size, cut from the start of the files' concatenation (0 = by fraction; a known corpus
    # with a convention, as enwik8's 90M / 5M / 5M, brings its own).
    c.train_bytes = 0
    c.val_bytes = 0
    c.test_bytes = 0
    c.windows = 0  # N > 0: train on a fixed bank of N windows; 0: fresh random windows every step
    c.seed = 0  # seeds window positions; independent of the model's init seed
    c.eval_windows = 512  # validation windows per periodic evaluation (evenly spread; 0 = the whole split)
    # Windows for the evaluation after the last step: by default the periodic evaluations' windows, so the
    # curve's last point compares with the others (0 = the whole split: 1,743 windows for gpt2_tiny).
    c.final_eval_windows = 512
    return c


def train_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.steps = 2000
    c.batch_size = 12
    c.lr = 1e-3  # peak learning rate, reached after `warmup_steps`
    c.min_lr = 1e-4  # the schedule's decay ends here at `steps`
    c.warmup_steps = 100
    c.beta1 = 0.9
    c.beta2 = 0.99
    c.weight_decay = 0.1  # decoupled decay, applied to matrices (ndim >= 2) only (muon: to its matrices only)
    c.optimizer = "adamw"  # 'adamw', or 'muon': Muon on the hidden matrices, AdamW on the rest (training/optimizer.py)
    c.muon_lr = 0.02  # Muon's peak learning rate (its leaves follow the schedule's shape)
    c.muon_beta = 0.95  # Muon's momentum
    c.muon_ns_steps = 5  # Newton-Schulz iterations per update (each is three matmuls per hidden matrix)
    c.muon_ns_coeffs = "standard"  # 'standard' (one quintic for every step) or 'polar_express' (one per step)
    c.schedule = "cosine"  # 'cosine' (warm-up, cosine to min_lr) or 'wsd' (warm-up, stable, linear decay to min_lr)
    c.decay_fraction = 0.2  # wsd: the last fraction of the steps decays
    c.grad_clip = 1.0  # global-norm clipping; 0 = off
    # Learning-rate multipliers per stage of a hierarchical model, outermost first, comma-separated
    # (H-Net's lr_multiplier: '2,1' doubles the byte layers' rates); '' = 1 everywhere.
    c.lr_multiplier = ""
    c.seed = 0  # seeds the parameter init
    c.init_params = ""  # weights to start from instead of a fresh init: a pack (params.json) or a launch.export folder
    c.eval_every = 250  # steps between evaluations on the validation split
    c.eval_batch_size = 32  # windows per evaluation forward pass (BENCHMARKS.md, Choices: eval batch)
    c.log_every = 50  # steps between progress lines when stdout is not a terminal
    c.progress = "auto"  # 'bar' (tqdm), 'lines', 'none', or 'auto' (bar on a terminal, else lines)
    c.plot_every_eval = False  # also redraw DIR/loss.png at every evaluation (it is always drawn at the end)
    c.probe_positions = 4  # positions whose top-5 guesses the probe report shows
    c.checkpoint_every = 250  # steps between train-state checkpoints in DIR/checkpoints (0 = only at the end)
    c.keep_checkpoints = 3  # how many of the latest checkpoints to keep
    c.resume = True  # continue from DIR/checkpoints when it holds a checkpoint of the same config
    c.max_grad_norm_skip = 0.0  # > 0: skip (not stop at) steps with a non-finite or larger gradient norm
    return c


def sample_config() -> ml_collections.ConfigDict:
    """Generation settings: used at the end of training and as `launch.sample`'s defaults."""
    c = ml_collections.ConfigDict()
    c.prompt = "ROMEO:"
    c.generate = 220  # bytes to generate at the end of training (0 = no sample)
    c.temperature = 0.85  # 0 = greedy
    c.top_k = 24  # 0 = all 256 bytes; 1 = greedy
    c.repeat_penalty = 0.0  # subtracted from a byte's logit per occurrence in the window
    c.repeat_window = 0  # how many recent bytes the penalty looks at (0 = off)
    c.seed = 0
    c.ascii_only = False  # only newline and printable ASCII
    c.decode = "fast"  # 'fast' (cached, one compiled loop) or 'reference' (one model call per byte); same text
    c.stream_chunk = 64  # bytes per compiled chunk of the fast sampler (BENCHMARKS.md, Choices: streaming)
    return c


def runtime_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # JAX's persistent compilation cache for training and sampling ('' = off; JAX_COMPILATION_CACHE_DIR,
    # when set, wins): on a CPU, compiling is most of a short run's start-up (BENCHMARKS.md, Choices:
    # start-up).
    c.compilation_cache_dir = "~/.cache/bytelm/jax"
    # Host CPU devices JAX creates (0 = JAX's default, one), set before JAX starts; with `mesh` each
    # takes half the batch, which keeps both cores of a small CPU busy (BENCHMARKS.md, Choices: CPU
    # devices). An environment that sets the count itself (XLA_FLAGS' --xla_force_host_platform_device_count,
    # JAX_NUM_CPU_DEVICES) wins over this default. No effect on GPU runs.
    c.cpu_devices = 2
    # Device mesh (bytelm/parallel/mesh.py): the batch is split over `data` × `fsdp` (-1 = the devices
    # that remain); with fsdp > 1, state leaves of at least `fsdp_min_size` elements are sharded too.
    c.mesh = "data=-1"
    c.fsdp_min_size = 2**14  # smaller leaves (biases, norms) cost more to gather than to replicate
    # GPU: cuDNN fused attention and bfloat16 matmuls over float32 parameters and optimizer state
    # (bytelm.parallel.runtime.model_kernels). Where cuDNN attention is missing it falls back with a
    # one-line warning; on a CPU to float32 (BENCHMARKS.md, Choices: matmul dtype).
    c.fast_kernels = False
    return c
