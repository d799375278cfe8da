"""Quality per second across model families: every family's configs trained as whole processes on the
same bytes, scored on the same whole validation split, against wall time and training FLOPs.

Each run is `launch.train` of one config as its own process, with every evaluation on the whole
validation split (`data.eval_windows=0`, `data.final_eval_windows=0`) every `eval_every` steps; its
evaluation lines are timestamped as they reach stdout (`bench/processes.py`), so the curve is loss
against the wall time of the whole process, evaluations, compilation and start-up included. The time
to a target is the moment of the first evaluation at or below it (None: not reached within the run).
Two seeds per config (init and windows). FLOPs are the family's count per token (`Family.flops_per_token`)
× tokens trained; XLA's own count is not used, since a one-hot input makes it count the embedding's
matmul that an index lookup would not need.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.processes import time_to
from bench.speedrun import run_ours
from bytelm import models
from bytelm.config_base import load_config_file

# config → (steps, steps between whole-split evaluations): each config's own recipe (the records', the
# speedrun's, the bigram's), the others as many steps as reach the second target or a budget of about ten
# minutes here, so that the table shows what a budget buys.
RUNS = {
    "bigram": (1000, 250),
    "gpt2_tiny": (2000, 250),
    "gpt2_speedrun": (200, 50),
    "record_2min": (700, 175),
    "record_10min": (1700, 170),
    "mamba_tiny": (1200, 200),
    "mamba2_tiny": (1500, 250),
    "hierarchical_learned": (1200, 200),
    "hierarchical_space": (1500, 250),
    "hierarchical_fixed": (1500, 250),
}
TARGETS = (1.70, 1.55)


def _config_facts(config_file: Path) -> dict:
    config = load_config_file(config_file)
    family = models.family_of(config.model)
    model = models.build(config.model)
    return {
        "family": family.name,
        "params": models.count_params(models.abstract_variables(model)),
        "flops_per_token": family.flops_per_token(family.config(config.model)),
        "tokens_per_step": config.train.batch_size * config.model.seq_len,
    }


def bench_families(
    config_dir: str,
    runs: dict[str, tuple[int, int]],
    seeds: Sequence[int],
    log: Callable[[str], None],
    overrides: dict | None = None,
    keep: Callable[[dict], None] = lambda part: None,
) -> dict:
    """Every config of `runs` (name → (steps, eval_every)) for each of `seeds`, interleaved by seed so that
    the machine's drift falls on every family alike. `overrides` go to every run (another corpus). `keep`
    receives the section so far after every run, so that an interrupted hour keeps what it measured."""
    facts = {name: _config_facts(Path(config_dir) / f"{name}.py") for name in runs}
    out = {"runs": {name: [] for name in runs}, "facts": facts, "targets": list(TARGETS), "overrides": overrides or {}}
    for seed in seeds:
        for name, (steps, every) in runs.items():
            flags = {"train.steps": steps, "train.eval_every": every, "data.eval_windows": 0}
            flags |= {"data.final_eval_windows": 0, "train.checkpoint_every": 0, **(overrides or {})}
            r = run_ours(str(Path(config_dir) / f"{name}.py"), seed, flags)
            r["time_to"] = {f"{t:.2f}": time_to(r["curve"], t) for t in TARGETS}
            r["flops"] = (
                facts[name]["flops_per_token"]
                and facts[name]["flops_per_token"] * facts[name]["tokens_per_step"] * steps
            )
            out["runs"][name].append(r)
            reached = ", ".join(f"≤{t}: {_secs(v)}" for t, v in r["time_to"].items())
            log(f"family  {name:<14} seed {seed}: val {r['final_val_loss']:.4f} in {r['wall_s']:.0f} s ({reached})")
            out["pareto"] = pareto_front([p for rs in out["runs"].values() for r in rs for p in r["curve"]])
            keep(out)
    return out


def merged(earlier: dict | None, new: dict) -> dict:
    """`new` added to an `earlier` section of the same corpus: a config's runs of other seeds kept, those of
    the same seed replaced; configs in `RUNS`'s order; the front drawn again over every run."""
    if not earlier or earlier.get("overrides", {}) != new["overrides"]:
        return new
    runs = {name: list(rs) for name, rs in earlier["runs"].items()}
    for name, rs in new["runs"].items():
        seeds = {r["seed"] for r in rs}
        runs[name] = sorted([r for r in runs.get(name, []) if r["seed"] not in seeds] + rs, key=lambda r: r["seed"])
    order = [n for n in RUNS if n in runs] + [n for n in runs if n not in RUNS]
    out = {**new, "runs": {n: runs[n] for n in order}, "facts": {**earlier["facts"], **new["facts"]}}
    out["pareto"] = pareto_front([p for rs in out["runs"].values() for r in rs for p in r["curve"]])
    return out


def _secs(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.0f} s"


def pareto_front(points: list[dict]) -> list[dict]:
    """The points `{t_s, val_loss}` that no other point beats on both wall time and loss, by time."""
    front, best = [], math.inf
    for p in sorted(points, key=lambda p: (p["t_s"], p["val_loss"])):
        if p["val_loss"] < best:
            front.append({"t_s": p["t_s"], "val_loss": p["val_loss"]})
            best = p["val_loss"]
    return front


def bench_records(config_dir: str, names: tuple[str, ...], seeds: int, log: Callable[[str], None]) -> dict:
    """Each record config as it is configured (its own evaluations: the whole split once, at the end),
    whole processes: a first run that fills a fresh compilation cache (cold, reported as such), then
    `seeds` runs from that cache (warm), as any second run of a config starts."""
    out = {}
    for name in names:
        path = str(Path(config_dir) / f"{name}.py")
        with tempfile.TemporaryDirectory() as cache_dir:
            cold = run_ours(path, 0, cache_dir=cache_dir)
            warm = [run_ours(path, seed, cache_dir=cache_dir) for seed in range(seeds)]
        out[name] = {"cold": _as_configured(cold), "warm": [_as_configured(r) for r in warm]}
        finals = " / ".join(f"{r['final_val_loss']:.4f} in {r['wall_s']:.0f} s" for r in warm)
        log(f"record  {name:<14} cold {cold['wall_s']:.0f} s; warm: {finals}")
    return out


def _as_configured(r: dict) -> dict:
    return {k: r[k] for k in ("seed", "final_val_loss", "wall_s", "first_step_s", "tokens_per_s", "steps")}
