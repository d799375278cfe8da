"""The PyTorch peer (`bench/nanogpt_torch.py`), run as its own process on the same windows."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from bytelm import models
from bytelm.errors import BytelmError, UsageError
from bytelm.models.gpt2 import GPT2Config

REPO = Path(__file__).resolve().parent.parent


def run_peer(config, corpus_path: Path | str, steps: int, eval_windows: int) -> dict:
    """Trains `config`'s GPT-2 with the PyTorch peer in a child process; returns its JSON."""
    if importlib.util.find_spec("torch") is None:
        raise UsageError("--peer=torch needs PyTorch: pip install -e '.[bench]' (torch 2.13.0, CPU build)")
    m, t = config.model, config.train
    model_config = models.family_of(m).config(m)
    if not (isinstance(model_config, GPT2Config) and model_config.is_gpt2()):
        raise UsageError(
            f"--peer=torch trains GPT-2 exactly (GPT2Config at GPT-2's options); --config is {m.to_dict()}"
        )
    fields = {
        "corpus": Path(corpus_path).resolve(),
        "val_fraction": config.data.val_fraction,
        "steps": steps,
        "eval_windows": eval_windows,
        "data_seed": config.data.seed,
        **{k: m[k] for k in ("seq_len", "num_layers", "num_heads", "head_dim", "ffn_hidden")},
        **{k: t[k] for k in ("batch_size", "warmup_steps", "lr", "min_lr", "beta1", "beta2", "weight_decay")},
        "grad_clip": t.grad_clip,
    }
    cmd = [sys.executable, "-m", "bench.nanogpt_torch", *(f"--{k}={v}" for k, v in fields.items())]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise BytelmError(f"the torch peer failed (exit {proc.returncode}): {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
