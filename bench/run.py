"""One benchmark run: which sections run, what an earlier JSON keeps, and the files it writes."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import tempfile
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections

from bench import (
    ablation,
    choices,
    corpus_speed,
    families,
    nanogpt_real,
    op_profile,
    pack_speed,
    peers,
    sampling_speed,
    scan_speed,
    speedrun,
    ssd_speed,
    tables,
    training_speed,
    weight_decay,
)
from bench.measure import matmul_ceiling_gflops
from bytelm.atomic_io import atomic_write_json, atomic_write_text
from bytelm.config_base import load_config_file
from bytelm.data import corpus
from bytelm.errors import UsageError

SECTIONS = ("train", "sample", "pack", "scan", "choices", "decay", "corpus", "mamba2", "profile", "families")
SECTIONS += ("records", "ablation", "recipe", "speedrun")
DEFAULT_SECTIONS = ("train", "sample", "pack", "scan", "choices", "decay", "corpus")


@dataclasses.dataclass(frozen=True)
class Options:
    """What `launch.benchmark`'s flags ask for."""

    config: ml_collections.ConfigDict  # the config the train and recipe sections train
    only: tuple[str, ...] = DEFAULT_SECTIONS
    peer: str = ""
    train_steps: int = 50
    pack_params_m: float = 100.0
    out: str = "bench.json"
    markdown: str = "BENCHMARKS.md"
    repeats: int = 3
    scan_lengths: tuple[int, ...] = (64, 256, 1024, 2048)
    scan_forms: tuple[str, ...] = ("sequential", "fused", "parallel:16", "parallel:64", "parallel")
    scan_memory_budget_gb: float = 14.0
    config_dir: str = "configs"
    sample_configs: tuple[str, ...] = ("gpt2_tiny", "mamba_tiny")  # the sample section's models, by config file
    scan_config: str = "mamba_tiny"  # the config of the scan section (and the fused-unroll choice)
    decay_steps: int = 400  # the decay section's training steps per arm and seed
    decay_seeds: int = 2
    ssd_lengths: tuple[int, ...] = (256, 1024, 4096)  # the mamba2 section's windows
    ssd_chunks: tuple[int, ...] = (16, 32, 64, 128, 256)  # and its SSD chunk sizes (mamba2_tiny: 16)
    ssd_steps: int = 5  # steps per case and round
    profile_configs: tuple[str, ...] = ("mamba2_tiny", "mamba_tiny", "gpt2_tiny")  # the profile section's
    profile_steps: int = 5  # traced steps per config
    profile_top: int = 12  # rows per config
    families_seeds: int = 2
    families_first_seed: int = 0  # seeds families_first_seed, … (+ families_seeds), added to an existing table
    families_configs: tuple[str, ...] = ()  # the families section's configs (() = all of bench/families.py's RUNS)
    record_configs: tuple[str, ...] = ("record_2min",)  # the records section's configs, run as configured
    ablation_configs: tuple[str, ...] = ("record_2min",)  # the ablation section's configs, each lever removed
    ablation_levers: tuple[str, ...] = ()  # the ablation section's levers (() = all; "none" is the record)
    families_corpus: str = ""  # the families section on another corpus: a file, folder or glob ('' = the config's)
    corpus_gb: float = 2.0  # the corpus section's large corpus
    corpus_steps: int = 50
    nanogpt_dir: str = ""  # a nanoGPT checkout, for --peer=nanogpt
    nanogpt_iters: int = 2000  # its README's CPU recipe
    speedrun_seeds: int = 2  # rounds of the speedrun section, one seed each
    ablation_seeds: int = 2  # seeds of each ablation row
    throughput_steps: int = 600  # steps of the speedrun section's gpt2_tiny and torch-peer throughput runs

    def check(self) -> None:
        unknown = set(self.only) - set(SECTIONS)
        if unknown:
            raise UsageError(
                f"unknown benchmark section {', '.join(sorted(unknown))}: choose from {', '.join(SECTIONS)}"
            )
        if self.peer == "nanogpt" and "speedrun" not in self.only:
            raise UsageError("--peer=nanogpt is the speedrun section's peer: add --only=speedrun (or use --peer=torch)")
        if self.peer == "torch" and self.only == ("speedrun",):
            raise UsageError("the speedrun section's peer is real nanoGPT: pass --peer=nanogpt --nanogpt_dir=PATH")
        if self.peer == "nanogpt":
            nanogpt_real.check_checkout(self.nanogpt_dir)
            nanogpt_real.check_modules()
        if self.repeats < 1 or self.train_steps < 1:
            raise UsageError(f"--repeats and --train_steps must be at least 1, got {self.repeats}, {self.train_steps}")
        if self.decay_steps < 4:  # the decay curves are read at every quarter of the run
            raise UsageError(f"--decay_steps must be at least 4, got {self.decay_steps}")
        counts = {"decay_seeds": self.decay_seeds, "ssd_steps": self.ssd_steps, "families_seeds": self.families_seeds}
        counts |= {"profile_steps": self.profile_steps, "profile_top": self.profile_top}
        counts |= {"ssd_lengths": min(self.ssd_lengths, default=0), "ssd_chunks": min(self.ssd_chunks, default=0)}
        for name, value in counts.items():
            if value < 1:
                raise UsageError(f"--{name} must be at least 1 (every entry, and at least one), got {value}")
        # Sections that load their configs when they start (perhaps after an hour of others): named now.
        late = {"profile": ("profile_configs", self.profile_configs)}
        late["records"] = ("record_configs", self.record_configs)
        late["ablation"] = ("ablation_configs", self.ablation_configs)
        unknown = [n for n in self.families_configs if n not in families.RUNS]
        if unknown:
            raise UsageError(
                f"--families_configs names {', '.join(unknown)}, which the families section does not run: "
                f"choose from {', '.join(families.RUNS)}"
            )
        if "ablation" in self.only and self.ablation_seeds < 1:
            raise UsageError(f"--ablation_seeds must be at least 1 for --only=ablation, got {self.ablation_seeds}")
        if self.families_first_seed < 0:
            raise UsageError(f"--families_first_seed must be at least 0, got {self.families_first_seed}")
        for section, (flag, names) in late.items():
            missing = [n for n in names if section in self.only and not (Path(self.config_dir) / f"{n}.py").is_file()]
            if missing:
                raise UsageError(
                    f"--{flag} names {', '.join(missing)}, which {self.config_dir}/ does not hold: name its *.py files"
                )
        if self.ablation_levers:
            self._check_ablation_levers()

    def _check_ablation_levers(self) -> None:
        if "ablation" not in self.only:
            raise UsageError("--ablation_levers chooses the ablation section's levers: add --only=ablation")
        for name in self.ablation_configs:
            known = ["none", *ablation.levers(load_config_file(Path(self.config_dir) / f"{name}.py"))]
            unknown = [lever for lever in self.ablation_levers if lever not in known]
            if unknown:
                raise UsageError(
                    f"--ablation_levers names {', '.join(map(repr, unknown))}, which {name} does not have: "
                    f"choose from {', '.join(map(repr, known))}"
                )


def machine() -> dict:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
    }


def _start_document(o: Options) -> tuple[dict, list[dict]]:
    """This run's document, holding the sections of an existing `--out` that this run does not
    measure (each with the date it was measured), and the earlier scan rows."""
    doc = {"machine": machine(), "repeats": o.repeats}
    previous_scan, measured = [], {}
    if os.path.exists(o.out):
        try:
            previous = json.loads(Path(o.out).read_text())
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read {o.out} to keep its other sections ({e}): pass a new --out") from None
        previous_scan = [r for r in previous.get("scan", []) if "memory_mb" in r]  # older files: peak RSS
        doc = {**{k: previous[k] for k in SECTIONS if k in previous}, **doc}
        earlier = previous.get("measured") or {k: previous["machine"]["date"] for k in SECTIONS if k in previous}
        measured = {k: v for k, v in earlier.items() if k in doc}
    doc["measured"] = {**measured, **{k: doc["machine"]["date"] for k in o.only}}
    return doc, previous_scan


def _train_section(o: Options, log: Callable[[str], None]) -> dict:
    ceiling = matmul_ceiling_gflops()
    log(f"ceiling float32 matmul {ceiling['n']}³: {ceiling['gflops']['median']:.1f} GFLOP/s")
    data = corpus.load(o.config.data, o.config.model.seq_len)
    run = training_speed.bench_train(
        o.config, data.train.to_array(), o.train_steps, o.repeats, log, ceiling_gflops=ceiling["gflops"]["median"]
    )
    section = {"ceiling": ceiling, "runs": [run]}
    if o.peer:
        peer = peers.run_peer(o.config, data.path, 10 + o.train_steps * o.repeats, eval_windows=1)
        peer["ratio"] = peer["step_ms"]["median"] / run["step_ms"]["median"]
        section["peer"] = peer
        log(
            f"peer    {peer['peer']}: {peer['tokens_per_s']:,.0f} tok/s (step {peer['step_ms']['median']:.1f} ms); "
            f"bytelm / peer = {peer['ratio']:.2f}"
        )
    return section


def _scan_section(o: Options, scan: ml_collections.ConfigDict, previous: list[dict], log) -> list[dict]:
    data = corpus.load(scan.data, max(o.scan_lengths))
    rows = scan_speed.bench_scan(
        scan, data.train.to_array(), list(o.scan_lengths), list(o.scan_forms), o.repeats, log,
        memory_budget_gb=o.scan_memory_budget_gb,
    )  # fmt: skip
    # Keep the earlier measurements of the (length, form) pairs this run did not cover.
    done = {(r["length"], r["form"]) for r in rows}
    kept = [r for r in previous if (r["length"], r["form"]) not in done]
    return sorted(kept + rows, key=lambda r: r["length"])


def _recipe_section(o: Options, log) -> dict:
    section = {"ours": training_speed.recipe(o.config, log)}
    if o.peer:
        data = corpus.load(o.config.data, o.config.model.seq_len)
        peer = peers.run_peer(o.config, data.path, o.config.train.steps, eval_windows=o.config.data.final_eval_windows)
        peer["wall_ratio"] = section["ours"]["wall_s"] / peer["wall_s"]
        section["peer"] = peer
        log(
            f"peer    {peer['peer']} {peer['steps']} steps: val {peer['val_loss']:.4f}, wall {peer['wall_s']:.1f} s; "
            f"bytelm wall / peer wall = {peer['wall_ratio']:.2f}"
        )
    return section


def main(o: Options, log: Callable[[str], None] = lambda s: print(s, flush=True)) -> None:
    """Runs the sections `o.only` asks for, then writes the JSON and regenerates the markdown."""
    o.check()
    names = (*o.sample_configs, o.scan_config)
    configs = {name: load_config_file(Path(o.config_dir) / f"{name}.py") for name in names}
    doc, previous_scan = _start_document(o)
    sections = {
        "train": lambda: _train_section(o, log),
        "sample": lambda: sampling_speed.bench_sample({n: configs[n] for n in o.sample_configs}, o.repeats, log),
        "pack": lambda: _pack_section(o, log),
        "scan": lambda: _scan_section(o, configs[o.scan_config], previous_scan, log),
        "choices": lambda: choices.bench_choices(o.config, configs[o.scan_config], o.repeats, log),
        "decay": lambda: weight_decay.bench_no_decay(configs[o.scan_config], o.decay_seeds, o.decay_steps, 128, log),
        "corpus": lambda: _corpus_section(o, log),
        "mamba2": lambda: _ssd_section(o, log),
        "profile": lambda: _profile_section(o, log),
        "families": lambda: _families_section(o, log, doc),
        "records": lambda: families.bench_records(o.config_dir, o.record_configs, o.families_seeds, log),
        "ablation": lambda: _ablation_section(o, log, doc),
        "recipe": lambda: _recipe_section(o, log),
        "speedrun": lambda: speedrun.bench_speedrun(o, log),
    }
    for name in (s for s in SECTIONS if s in o.only):
        doc[name] = sections[name]()
        atomic_write_json(o.out, doc)  # after each section: a later failure keeps what was measured
    if o.markdown:
        if "speedrun" in doc:  # the curves' charts sit beside the page
            atomic_write_text(Path(o.markdown).with_name(tables.SPEEDRUN_CHART), tables.speedrun_chart(doc["speedrun"]))
        if "families" in doc:
            atomic_write_text(Path(o.markdown).with_name(tables.FAMILIES_CHART), tables.families_chart(doc["families"]))
        atomic_write_text(Path(o.markdown), tables.markdown(doc))
    written = ([o.out] if o.only else []) + ([o.markdown] if o.markdown else [])  # no section: the markdown alone
    print("wrote " + " and ".join(written) if written else "nothing to do: no section, and --markdown=''")


def _ssd_section(o: Options, log) -> list[dict]:
    names = ("gpt2_tiny", "mamba_tiny", "mamba2_tiny")
    configs = {n: load_config_file(Path(o.config_dir) / f"{n}.py") for n in names}
    ids = corpus.load(configs["mamba_tiny"].data, max(o.ssd_lengths)).train.to_array()
    return ssd_speed.bench_ssd_speed(
        configs, ids, list(o.ssd_lengths), list(o.ssd_chunks), o.repeats, o.ssd_steps, log, o.scan_memory_budget_gb
    )


def _profile_section(o: Options, log) -> list[dict]:
    configs = {n: load_config_file(Path(o.config_dir) / f"{n}.py") for n in o.profile_configs}
    longest = max(c.model.seq_len for c in configs.values())
    ids = corpus.load(next(iter(configs.values())).data, longest).train.to_array()
    return op_profile.bench_profile(configs, ids, o.profile_steps, o.profile_top, log)


def _families_section(o: Options, log, doc: dict) -> dict:
    """The families table; runs of other seeds or configs already in `doc` (on the same corpus) are kept,
    and `--out` is written after every run."""
    overrides = (
        {"data.file": str(Path(o.families_corpus).resolve()), "data.test_fraction": 0.1} if o.families_corpus else None
    )
    runs = {name: families.RUNS[name] for name in o.families_configs or families.RUNS}
    seeds = range(o.families_first_seed, o.families_first_seed + o.families_seeds)
    earlier = doc.get("families")
    keep = lambda part: atomic_write_json(o.out, {**doc, "families": families.merged(earlier, part)})
    return families.merged(earlier, families.bench_families(o.config_dir, runs, seeds, log, overrides, keep))


def _ablation_section(o: Options, log, doc: dict) -> dict:
    """The records' ablations; the ablations of configs this run does not name are kept from `doc`, and
    `--out` is written after every run."""
    earlier = doc.get("ablation")
    keep = lambda part: atomic_write_json(o.out, {**doc, "ablation": ablation.merged(earlier, part)})
    new = ablation.bench_ablation(o.config_dir, o.ablation_configs, o.ablation_seeds, log, keep, o.ablation_levers)
    return ablation.merged(earlier, new)


def _pack_section(o: Options, log) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        return pack_speed.bench_pack(o.pack_params_m, o.repeats, folder, log)


def _corpus_section(o: Options, log) -> dict:
    small = corpus.load(o.config.data, o.config.model.seq_len)
    config_file = str(Path(o.config_dir) / "gpt2_tiny.py")
    return corpus_speed.bench_corpus(config_file, Path(small.path), o.corpus_gb, o.corpus_steps, o.repeats, log)
