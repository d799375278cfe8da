"""What `launch.sample` does once its flags are checked: load a run's weights, then print samples or
run an interactive prompt loop. Text goes through `write`, input comes from `read`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections

from bytelm import models
from bytelm.artifacts import run_dir
from bytelm.data import tokenizer
from bytelm.interop import export, huggingface
from bytelm.sampling.decoders import make_sampler
from bytelm.sampling.sampler import Sampler
from bytelm.sampling.settings import SampleSettings, prompt_bytes


def write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def load_sampler(checkpoint_dir: str | Path, config: ml_collections.ConfigDict, decode: str, chunk: int) -> Sampler:
    """The run's model with its pack, or an export folder's model with its weights (shapes checked
    against the model first), behind `decode`."""
    model = models.build(config.model)
    path = Path(checkpoint_dir)
    weights = path if huggingface.is_export(path) else path / run_dir.PARAMS_FILE
    variables = export.load_weights(weights, models.abstract_variables(model))
    return make_sampler(model, jax.tree_util.tree_map(jnp.asarray, variables), decode, chunk)


def print_samples(
    sampler: Sampler, prompt: bytes, settings: SampleSettings, num_samples: int, write: Callable[[str], None]
) -> None:
    """One sample streamed as it is drawn, or `num_samples` of them (one call, seeds seed + i), each
    under a header; every sample is the prompt and its continuation."""
    if num_samples == 1:
        decoder = tokenizer.StreamDecoder()
        write(prompt.decode("utf-8"))
        sampler.continue_ids(list(prompt), settings, on_token=lambda t, d=decoder: write(d.push([t])))
        write(decoder.flush() + "\n")
        return
    ids = sampler.generate(list(prompt), settings, num_samples=num_samples)
    for i, row in enumerate(ids):
        write(f"--- sample {i + 1} of {num_samples} (seed {settings.seed + i}) ---\n")
        write(prompt.decode("utf-8") + tokenizer.decode(row) + "\n")


def interactive(
    sampler: Sampler,
    history: list[int],
    settings: SampleSettings,
    write: Callable[[str], None],
    read: Callable[[str], str] = input,
) -> None:
    """A prompt loop: each line is appended to the context as typed and continued; `:show` prints
    the context, `:clear` resets it, `:q` or an empty line (or the end of input) exits. Token
    indices run on across turns, so a session depends only on the seed and what was typed."""
    index = 0
    write("interactive: type text to continue; :show, :clear, :q (or an empty line) to quit\n")
    while True:
        try:
            line = read("> ")
        except EOFError:
            return
        if line in ("", ":q"):
            return
        if line == ":show":
            write((tokenizer.display(history) or "(empty)") + "\n")
            continue
        if line == ":clear":
            history.clear()
            write("(context cleared)\n")
            continue
        history.extend(tokenizer.encode(prompt_bytes(line)).tolist())
        decoder = tokenizer.StreamDecoder()
        write(line)
        new = sampler.continue_ids(
            history, settings, start_index=index, on_token=lambda t, d=decoder: write(d.push([t]))
        )
        write(decoder.flush() + "\n")
        index += len(new)


def sample_run(
    checkpoint_dir: str | Path,
    config: ml_collections.ConfigDict,
    settings: SampleSettings,
    prompt: bytes | None,
    *,
    decode: str,
    chunk: int,
    num_samples: int = 1,
    loop: bool = False,
    write: Callable[[str], None] = write_stdout,
) -> None:
    """Samples from the run in `checkpoint_dir`: `num_samples` continuations of `prompt`, or with
    `loop` the interactive prompt loop (starting from `prompt` when one is given)."""
    sampler = load_sampler(checkpoint_dir, config, decode, chunk)
    if loop:
        interactive(sampler, list(prompt or b""), settings, write)
        return
    print_samples(sampler, prompt, settings, num_samples, write)
