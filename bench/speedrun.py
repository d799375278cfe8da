"""Time to quality: configs/gpt2_speedrun.py against real nanoGPT's 2000-iteration CPU recipe, whole
processes side by side, and the ablation of each lever the speedrun pulls.

Every run is its own process. The speedrun's first run compiles from cold into a fresh persistent
compilation cache (the config's default is to keep one), and is reported as such; its later runs
start from that cache, as any second run of a config does (nanoGPT, eager, compiles nothing). The
ablation's runs compile from cold, each its own program. The rounds interleave the peers, so the
machine's drift falls on all of them alike: per seed, nanoGPT, the speedrun (round 0: cold, then
warm), gpt2_tiny and the same-model torch peer (`bench/nanogpt_torch.py`, `throughput_steps` steps
each, for tokens/s). Our evaluation lines (`step N val_loss X`) and nanoGPT's (`step N: … val
loss X`) are timestamped as they reach stdout, which gives each curve against wall time.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench import nanogpt_real, peers
from bench.processes import REPO, time_to, timed_process
from bytelm.config_base import load_config_file
from bytelm.data import corpus

TARGET = 1.88  # nats/byte on the whole validation split: what nanoGPT's README reports for this recipe
OUR_EVAL_LINE = r"^step\s+(\d+)\s+val_loss ([0-9.]+)"
# Each lever and the change that tests it: the speedrun's levers removed (back to gpt2_tiny's, GPT-2's,
# choice), and the two it leaves out added; `size_levers` adds gpt2_tiny's depth and batch.
LEVERS = {
    "without muon": {"train.optimizer": "adamw"},
    "without polar_express": {"train.muon_ns_coeffs": "standard", "train.muon_ns_steps": 5},
    "without a lower momentum": {"train.muon_beta": 0.95},  # Muon's usual
    "without wsd": {"train.schedule": "cosine"},
    "without rope": {"model.positions": "learned"},
    "without rmsnorm": {"model.norm": "layernorm"},
    "without relu2": {"model.activation": "gelu"},
    "without qk_norm": {"model.qk_norm": False},
    "without no_biases": {"model.biases": True},
    "with an untied head": {"model.tied_head": False},
    "with zero_init": {"model.zero_init": True},
}


def same_tokens(config, factor: float, **smaller) -> dict:
    """Overrides for smaller steps (`smaller`: the model's `seq_len` or the train's `batch_size`), `factor`
    times as many of them, warmup steps and steps between evaluations alike: the same tokens at every
    point of the run (a config that evaluates at the end only still does)."""
    scaled = {k: math.ceil(config.train[k] * factor) for k in ("steps", "warmup_steps", "eval_every")}
    out = {f"{'model' if k == 'seq_len' else 'train'}.{k}": v for k, v in smaller.items()}
    return out | {f"train.{k}": v for k, v in scaled.items()}


def size_levers(config, tiny) -> dict[str, dict]:
    """The speedrun's size set against gpt2_tiny's (`tiny`), each put back: its depth, and its batch at
    the same tokens."""
    out = {}
    layers, batch = tiny.model.num_layers, tiny.train.batch_size
    if config.model.num_layers != layers:
        out[f"with gpt2_tiny's {layers} layers"] = {"model.num_layers": layers}
    if config.train.batch_size != batch:
        factor = config.train.batch_size / batch
        out[f"with gpt2_tiny's batches of {batch}, same tokens"] = same_tokens(config, factor, batch_size=batch)
    return out


def run_ours(config_file: str, seed: int, overrides: dict | None = None, cache_dir: str = "") -> dict:
    """`launch.train` of `config_file` with `seed` (init and windows) as its own process, compiling
    into `cache_dir` ('' = no cache); its wall time, its curve and its summary (the final validation
    loss is the config's final evaluation)."""
    flags = {"train.seed": seed, "data.seed": seed, "sample.generate": 0, "train.progress": "none"}
    flags |= {"runtime.compilation_cache_dir": cache_dir, **(overrides or {})}
    with tempfile.TemporaryDirectory() as workdir:
        cmd = [sys.executable, "-m", "launch.train", f"--config={config_file}", f"--workdir={workdir}"]
        out = timed_process([*cmd, *(f"--config.{k}={v}" for k, v in flags.items())], REPO, OUR_EVAL_LINE)
        log = json.loads((Path(workdir) / "train_log.json").read_text())
    summary, last = log["summary"], (log.get("records") or [{}])[-1]
    final = summary["final_val_loss"]
    return {
        "config": Path(config_file).stem,
        "seed": seed,
        "overrides": overrides or {},
        "wall_s": out["wall_s"],
        "curve": out["curve"],
        "final_val_loss": final,
        "reached": final <= TARGET,
        "time_to_target_s": out["wall_s"] if final <= TARGET else None,
        "first_step_s": summary["first_step_s"],
        "tokens_per_s": summary["tokens_per_s"],
        "steps": summary["steps"],
        "model_metrics": {k: v for k, v in last.items() if k.startswith("model/")},  # the last logged step's
    }


def _round(o, seed: int, data_path: Path, cache_dir: str, log: Callable[[str], None]) -> dict:
    row = {"seed": seed}
    if o.peer == "nanogpt":
        row["nanogpt"] = ng = nanogpt_real.run(o.nanogpt_dir, data_path, o.nanogpt_iters)
        log(f"nanoGPT    {ng['iters']} iters: wall {ng['wall_s']:.1f} s, val {ng['final_val_loss']:.4f}, "
            f"{ng['tokens_per_s']:,.0f} tok/s (iter {ng['iter_ms']['median']:.1f} ms)")  # fmt: skip
    config_file = str(Path(o.config_dir) / "gpt2_speedrun.py")
    if seed == 0:  # the first run of all fills the cache: the cold start a new user pays once
        row["speedrun_cold"] = sr = run_ours(config_file, seed, cache_dir=cache_dir)
        log(f"speedrun   seed {seed} cold: wall {sr['wall_s']:.1f} s, whole-split val {sr['final_val_loss']:.4f}")
    row["speedrun"] = sr = run_ours(config_file, seed, cache_dir=cache_dir)
    log(f"speedrun   seed {seed}: wall {sr['wall_s']:.1f} s, whole-split val {sr['final_val_loss']:.4f}")
    tiny = str(Path(o.config_dir) / "gpt2_tiny.py")
    row["gpt2_tiny"] = t = run_ours(tiny, seed, {"train.steps": o.throughput_steps})
    log(f"gpt2_tiny  {o.throughput_steps} steps: {t['tokens_per_s']:,.0f} tok/s")
    if o.peer == "nanogpt":
        config = load_config_file(tiny)
        row["torch"] = p = peers.run_peer(config, data_path, o.throughput_steps, eval_windows=1)
        log(f"torch peer {o.throughput_steps} steps: {p['tokens_per_s']:,.0f} tok/s")
    return row


def bench_speedrun(o, log: Callable[[str], None]) -> dict:
    """The rounds (one per seed) and the ablation; `o` is `bench.run.Options`."""
    config = load_config_file(Path(o.config_dir) / "gpt2_speedrun.py")
    data_path = Path(corpus.load(config.data, config.model.seq_len).path)
    with tempfile.TemporaryDirectory() as cache_dir:
        rounds = [_round(o, seed, data_path, cache_dir, log) for seed in range(o.speedrun_seeds)]
    tiny = load_config_file(Path(o.config_dir) / "gpt2_tiny.py")
    changes = {"none": {}, **LEVERS, **size_levers(config, tiny)}  # "none": the speedrun, as cold as the rest
    ablation = []
    for lever, change in changes.items():
        for seed in range(o.ablation_seeds):
            r = run_ours(str(Path(o.config_dir) / "gpt2_speedrun.py"), seed, change)
            ablation.append({"lever": lever, **r})
            log(f"{lever:<20} seed {seed}: val {r['final_val_loss']:.4f}, wall {r['wall_s']:.1f} s")
    return {"target": TARGET, "rounds": rounds, "ablation": ablation, "summary": summarize(rounds)}


def summarize(rounds: list[dict]) -> dict:
    """Ratios per round (ours / nanoGPT's, in the same round) and their medians and spreads."""
    out = {}

    def spread(values: list[float]) -> dict:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    with_peer = [r for r in rounds if "nanogpt" in r]
    if with_peer:
        out["wall_ratio"] = spread([r["speedrun"]["wall_s"] / r["nanogpt"]["wall_s"] for r in with_peer])
        cold = [r["speedrun_cold"]["wall_s"] / r["nanogpt"]["wall_s"] for r in with_peer if "speedrun_cold" in r]
        out["cold_wall_ratio"] = cold[0] if cold else None
        out["tiny_speed_ratio"] = spread(
            [r["gpt2_tiny"]["tokens_per_s"] / r["nanogpt"]["tokens_per_s"] for r in with_peer]
        )
        out["torch_speed_ratio"] = spread(
            [r["torch"]["tokens_per_s"] / r["nanogpt"]["tokens_per_s"] for r in with_peer]
        )
        times = [time_to(r["nanogpt"]["curve"], TARGET) for r in with_peer]
        out["nanogpt_time_to_target_s"] = times
    out["speedrun_val"] = spread([r["speedrun"]["final_val_loss"] for r in rounds])
    out["all_reached"] = all(r["speedrun"]["reached"] for r in rounds)
    return out
