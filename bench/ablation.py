"""The records' ablations: each lever a record config pulls removed, one at a time, at the record's own
steps, two seeds, whole processes.

A lever is one of the speedrun's (`bench.speedrun.LEVERS`, those named "without …") whose removal
changes the config, and the record's longer windows or larger batches: removed, they go back to
gpt2_tiny's 12 windows of 64 bytes at the same tokens (so four times the steps for 256-byte
windows) — a record is a budget, and fewer tokens would charge the smaller steps for a budget they did
not spend. Dropout is a lever either way: "without dropout" where the record drops, "with dropout"
(every rate the family has at `DROPOUT`) where it does not, so the table says what regularisation is
worth at the record's budget. Every run compiles from cold
(no persistent cache), so the rows compare alike; the rows of a seed run one after another, seed by
seed, so that the machine's drift falls on every lever alike. `only` runs some levers, and `merged` adds
the rows of a run to an earlier ablation of the same config (a lever's run of the same seed replaced).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import ml_collections

from bench.speedrun import LEVERS, run_ours, same_tokens
from bytelm import models
from bytelm.config_base import load_config_file

SHORT_WINDOW = 64  # gpt2_tiny's (and nanoGPT's CPU recipe's) window, in bytes
SMALL_BATCH = 12  # and its batch, in windows
DROPOUT = 0.1  # the rate "with dropout" sets (nanoGPT's Shakespeare recipes use 0.2 for a model 20× larger)


def levers(config: ml_collections.ConfigDict) -> dict[str, dict]:
    """The levers `config` pulls, each with the overrides that remove it (name → {field: value}); a lever
    of a field the config's family has not (a Mamba-2 record has no positions to make learned) is none."""
    out = {}
    for name, change in LEVERS.items():
        fields = [_field(config, k) for k in change]
        if name.startswith("without") and None not in fields and fields != list(change.values()):
            out[name] = change
    seq_len, batch = config.model.seq_len, config.train.batch_size
    if seq_len > SHORT_WINDOW:
        out[f"without {seq_len}-byte windows"] = same_tokens(config, seq_len / SHORT_WINDOW, seq_len=SHORT_WINDOW)
    if batch > SMALL_BATCH:
        out[f"without batches of {batch}"] = same_tokens(config, batch / SMALL_BATCH, batch_size=SMALL_BATCH)
    return out | _dropout(config)


def _dropout(config: ml_collections.ConfigDict) -> dict[str, dict]:
    """ "without dropout" (every rate 0) where the config drops, "with dropout" (every rate at `DROPOUT`)
    where its family has rates and it drops nothing; attention dropout only with the einsum attention."""
    fields = [f for f in models.family_of(config.model).dropout_fields if f != "attn_dropout" or not _fast(config)]
    rates = {f"model.{f}": config.model[f] for f in fields}
    if any(rates.values()):
        return {"without dropout": {k: 0.0 for k in rates}}
    return {f"with dropout {DROPOUT}": {k: DROPOUT for k in rates}} if rates else {}


def _fast(config: ml_collections.ConfigDict) -> bool:
    return bool(config.get("runtime", {}).get("fast_kernels", False))


def _field(config: ml_collections.ConfigDict, dotted: str):
    section, name = dotted.split(".")
    return config[section].get(name)


def bench_ablation(
    config_dir: str,
    names: Sequence[str],
    seeds: int,
    log: Callable[[str], None],
    keep: Callable[[dict], None] = lambda part: None,
    only: Sequence[str] = (),
) -> dict:
    """For each config of `names`: the config itself (lever "none") and each of its levers removed, for
    `seeds` seeds (`only`: those levers alone). Returns {name: {"levers": {lever: overrides}, "rows": [run,
    …]}}, every lever listed, run or not; `keep` receives the section so far after every run, so that an
    interrupted hour keeps what it measured."""
    out = {}
    for name in names:
        path = str(Path(config_dir) / f"{name}.py")
        config = load_config_file(path)
        changes = {"none": {}, **levers(config)}
        out[name] = {"config": config.to_dict(), "levers": changes, "rows": []}
        for seed in range(seeds):
            for lever, change in changes.items():
                if only and lever not in only:
                    continue
                r = run_ours(path, seed, change)
                out[name]["rows"].append({"lever": lever, **{k: v for k, v in r.items() if k != "curve"}})
                log(f"ablation {name} {lever:<28} seed {seed}: val {r['final_val_loss']:.4f}, wall {r['wall_s']:.0f} s")
                keep(out)
    return out


def merged(earlier: dict | None, new: dict) -> dict:
    """`new`'s rows added to `earlier`'s ablation of each config, replacing those of the same lever and
    seed (a run of every lever replaces them all, one of some levers only its own); the other configs'
    ablations kept. An earlier row is kept only while it still measures what `new` would: the same config
    (where the earlier section recorded it) and its lever's same overrides."""
    out = dict(earlier or {})
    for name, sec in new.items():
        old = out.get(name, {"levers": {}, "rows": []})
        same_config = old.get("config", sec["config"]) == sec["config"]
        ran = {(r["lever"], r["seed"]) for r in sec["rows"]}
        kept = [
            r for r in old["rows"]
            if same_config and (r["lever"], r["seed"]) not in ran
            and old["levers"].get(r["lever"]) == sec["levers"].get(r["lever"])
        ]  # fmt: skip
        out[name] = {**sec, "rows": kept + sec["rows"]}
    return out
