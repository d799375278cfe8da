"""Benchmarks: `python -m launch.benchmark [--only=train,sample,pack,scan,choices,decay,corpus] [--peer=torch]`.

Writes the JSON and regenerates BENCHMARKS.md (machine, versions, date, tables). A run of some
sections (--only=scan) keeps the other sections of an existing --out file, so the table stays whole.
Memory is XLA's plan for the compiled step (arguments, outputs and temporaries), deterministic.

`--peer=torch` also trains the same GPT-2 in PyTorch eager (bench/nanogpt_torch.py, extra `bench`)
in the same run, and reports the ratio. `--only=recipe` (not in the default set: it trains the whole
recipe) runs the full training recipe of `--config` and, with the peer, PyTorch's, side by side.
`--only=speedrun --peer=nanogpt --nanogpt_dir=PATH` (not in the default set: about half an hour)
runs configs/gpt2_speedrun.py against real nanoGPT's CPU recipe, whole processes, and the ablation
of its levers (bench/speedrun.py). `choices` measures the defaults that the code's comments point to
(BENCHMARKS.md, Choices). `--only=mamba2` (about 20 minutes) times Mamba-2's SSD chunk sizes against
Mamba and GPT-2 at several windows; `--only=families` (about two hours) trains every family's config
to its budget with `--families_seeds` seeds and draws the loss-against-time plot (bench/families.py;
`--families_configs` and `--families_first_seed` add runs to the table already in `--out`);
`--only=profile` (a minute) says where each `--profile_configs` train step's time goes, op by op;
`--only=records` runs each `--record_configs` config as configured, from a warm compilation cache, with
`--families_seeds` seeds (the two-minute record: about 7 minutes); `--only=ablation` removes each lever of
each `--ablation_configs` config in turn, `--ablation_seeds` seeds (bench/ablation.py; record_2min: about
15 minutes; `--ablation_levers="with dropout 0.1"` runs that lever alone and adds its rows). `--only=`
(no section) regenerates the markdown and its plots from `--out` as it stands.
"""

from absl import flags
from ml_collections import config_flags

from bench import run
from bytelm.errors import UsageError
from launch import cli, process

_ONLY = flags.DEFINE_list("only", list(run.DEFAULT_SECTIONS), f"sections to run: {', '.join(run.SECTIONS)}")
_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/gpt2_tiny.py", "the config the train and recipe sections train", lock_config=True
)
_PEER = flags.DEFINE_enum(
    "peer", "", ["", "torch", "nanogpt"],
    "torch: the same GPT-2 in PyTorch (train, recipe); nanogpt: real nanoGPT's CPU recipe (speedrun)",
)  # fmt: skip
_NANOGPT_DIR = flags.DEFINE_string(
    "nanogpt_dir", "", "a nanoGPT checkout (git clone https://github.com/karpathy/nanoGPT)"
)
_NANOGPT_ITERS = flags.DEFINE_integer("nanogpt_iters", 2000, "nanoGPT's iterations (its README's CPU recipe: 2000)")
_SPEEDRUN_SEEDS = flags.DEFINE_integer("speedrun_seeds", 2, "speedrun rounds, one seed each")
_ABLATION_SEEDS = flags.DEFINE_integer("ablation_seeds", 2, "seeds per ablation row")
_THROUGHPUT_STEPS = flags.DEFINE_integer("throughput_steps", 600, "steps of the speedrun section's throughput runs")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 50, "timed training steps per repetition (train section)")
_PACK_PARAMS_M = flags.DEFINE_float("pack_params_m", 100.0, "parameters of the pack section's tree, in millions")
_OUT = flags.DEFINE_string("out", "bench.json", "where the JSON goes")
_MARKDOWN = flags.DEFINE_string("markdown", "BENCHMARKS.md", "the table to regenerate ('' = none)")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed repetitions after warm-up (medians are reported)")
_SCAN_LENGTHS = flags.DEFINE_list("scan_lengths", ["64", "256", "1024", "2048"], "sequence lengths")
_SCAN_FORMS = flags.DEFINE_list(
    "scan_forms", ["sequential", "fused", "parallel:16", "parallel:64", "parallel"], "scan forms (mode[:chunk])"
)
_SCAN_BUDGET = flags.DEFINE_float(
    "scan_memory_budget_gb", 14.0, "scan forms that XLA plans above this are compiled, not run (0 = compile only)"
)
_CONFIG_DIR = flags.DEFINE_string("config_dir", "configs", "where the config files named below live")
_SAMPLE_CONFIGS = flags.DEFINE_list(
    "sample_configs", list(run.Options.sample_configs), "configs (file names in --config_dir) the sample section runs"
)
_SCAN_CONFIG = flags.DEFINE_string("scan_config", run.Options.scan_config, "the config of the scan section (Mamba)")
_DECAY_STEPS = flags.DEFINE_integer("decay_steps", run.Options.decay_steps, "decay section: steps per arm and seed")
_DECAY_SEEDS = flags.DEFINE_integer("decay_seeds", run.Options.decay_seeds, "decay section: seeds per arm")
_SSD_LENGTHS = flags.DEFINE_list("ssd_lengths", [str(n) for n in run.Options.ssd_lengths], "mamba2 section: windows")
_SSD_CHUNKS = flags.DEFINE_list("ssd_chunks", [str(n) for n in run.Options.ssd_chunks], "mamba2 section: SSD chunks")
_SSD_STEPS = flags.DEFINE_integer("ssd_steps", run.Options.ssd_steps, "mamba2 section: steps per case and round")
_PROFILE_CONFIGS = flags.DEFINE_list(
    "profile_configs", list(run.Options.profile_configs), "profile section: configs whose train step is profiled"
)
_PROFILE_STEPS = flags.DEFINE_integer("profile_steps", run.Options.profile_steps, "profile section: traced steps")
_PROFILE_TOP = flags.DEFINE_integer("profile_top", run.Options.profile_top, "profile section: rows per config")
_FAMILIES_SEEDS = flags.DEFINE_integer("families_seeds", run.Options.families_seeds, "families section: seeds")
_FAMILIES_FIRST_SEED = flags.DEFINE_integer(
    "families_first_seed", 0, "families section: its first seed (runs of other seeds already in --out are kept)"
)
_FAMILIES_CONFIGS = flags.DEFINE_list(
    "families_configs", [], "families section: these configs only ('' = all), added to those already in --out"
)
_RECORD_CONFIGS = flags.DEFINE_list(
    "record_configs", list(run.Options.record_configs), "records section: record configs run as configured"
)
_ABLATION_CONFIGS = flags.DEFINE_list(
    "ablation_configs", list(run.Options.ablation_configs), "ablation section: configs whose levers are removed"
)
_ABLATION_LEVERS = flags.DEFINE_list(
    "ablation_levers", [], "ablation section: only these levers (their rows added to the earlier ablation)"
)
_FAMILIES_CORPUS = flags.DEFINE_string(
    "families_corpus", "", "families section on another corpus (a file, folder or glob; 10% test split)"
)
_CORPUS_GB = flags.DEFINE_float("corpus_gb", 2.0, "size of the corpus section's large corpus (made in a temp folder)")
_CORPUS_STEPS = flags.DEFINE_integer("corpus_steps", 50, "training steps of each corpus section run")


def _ints(flag) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in flag.value)
    except ValueError:
        raise UsageError(f"--{flag.name} takes whole numbers separated by commas, got {','.join(flag.value)}") from None


def main() -> None:
    options = run.Options(
        config=_CONFIG.value,
        only=tuple(_ONLY.value),
        peer=_PEER.value,
        train_steps=_TRAIN_STEPS.value,
        pack_params_m=_PACK_PARAMS_M.value,
        out=_OUT.value,
        markdown=_MARKDOWN.value,
        repeats=_REPEATS.value,
        scan_lengths=_ints(_SCAN_LENGTHS),
        scan_forms=tuple(_SCAN_FORMS.value),
        scan_memory_budget_gb=_SCAN_BUDGET.value,
        config_dir=_CONFIG_DIR.value,
        sample_configs=tuple(_SAMPLE_CONFIGS.value),
        scan_config=_SCAN_CONFIG.value,
        decay_steps=_DECAY_STEPS.value,
        decay_seeds=_DECAY_SEEDS.value,
        ssd_lengths=_ints(_SSD_LENGTHS),
        ssd_chunks=_ints(_SSD_CHUNKS),
        ssd_steps=_SSD_STEPS.value,
        profile_configs=tuple(_PROFILE_CONFIGS.value),
        profile_steps=_PROFILE_STEPS.value,
        profile_top=_PROFILE_TOP.value,
        families_seeds=_FAMILIES_SEEDS.value,
        families_first_seed=_FAMILIES_FIRST_SEED.value,
        families_configs=tuple(_FAMILIES_CONFIGS.value),
        families_corpus=_FAMILIES_CORPUS.value,
        record_configs=tuple(_RECORD_CONFIGS.value),
        ablation_configs=tuple(_ABLATION_CONFIGS.value),
        ablation_levers=tuple(_ABLATION_LEVERS.value),
        corpus_gb=_CORPUS_GB.value,
        corpus_steps=_CORPUS_STEPS.value,
        nanogpt_dir=_NANOGPT_DIR.value,
        nanogpt_iters=_NANOGPT_ITERS.value,
        speedrun_seeds=_SPEEDRUN_SEEDS.value,
        ablation_seeds=_ABLATION_SEEDS.value,
        throughput_steps=_THROUGHPUT_STEPS.value,
    )
    options.check()
    # CPU devices before JAX starts; no persistent cache, so that compile times are compile times.
    process.configure(options.config.runtime, cli.overridden_fields(), compilation_cache=False)
    run.main(options)


if __name__ == "__main__":
    cli.run(main)
