"""What `launch.sample` does once its flags are checked: load a run's weights, then print samples or
run an interactive prompt loop. Text goes through `write`, input comes from `read`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bytelm import models
from bytelm.artifacts import run_dir
from bytelm.data import tokenizer
from bytelm.errors import UsageError
from bytelm.interop import export, huggingface
from bytelm.sampling.decoders import make_sampler
from bytelm.sampling.sampler import Sampler
from bytelm.sampling.settings import SampleSettings, prompt_bytes


def write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def load_model(checkpoint_dir: str | Path, config: ml_collections.ConfigDict):
    """The run's model and its pack, or an export folder's model and its weights (shapes checked
    against the model first)."""
    model = models.build(config.model)
    path = Path(checkpoint_dir)
    weights = path if huggingface.is_export(path) else path / run_dir.PARAMS_FILE
    variables = export.load_weights(weights, models.abstract_variables(model))
    return model, jax.tree_util.tree_map(jnp.asarray, variables)


def chunk_starts(model, variables, ids: list[int], seen=None) -> list[bool]:
    """Which bytes of `ids` start a chunk, as a chunking model (one that sows `boundaries`) splits each
    window of `seq_len` bytes from the start; a one-line `UsageError` for a model that does not chunk.
    A short last window is padded to `seq_len` (one compiled shape): its marks do not depend on the
    padding, because where a chunk starts depends only on the bytes up to it. `seen` is
    `models.seen_forward(model)`, built once by a caller that asks more than once."""
    L, marks = model.config.seq_len, []
    seen = seen or models.seen_forward(model)
    for start in range(0, max(len(ids), 1), L):
        window = ids[start : start + L]
        padded = np.zeros((1, L), dtype=np.int64)
        padded[0, : len(window)] = window
        boundaries = seen(variables, tokenizer.one_hot(padded, jnp))[1].get("intermediates", {})
        if "boundaries" not in boundaries:
            raise UsageError(f"--mark_chunks needs a model that chunks its bytes (the hierarchical family); "
                             f"this is a {type(model).__name__}")  # fmt: skip
        marks += [bool(b) for b in np.asarray(boundaries["boundaries"][0])[0, : len(window)]]
    return marks


def marked_text(ids: list[int], marks: list[bool], mark: str = "|") -> str:
    """The text of `ids` with `mark` before each byte that starts a chunk (but the first); a chunk that
    starts inside a multi-byte character is marked before the character."""
    decoder, pieces, pending = tokenizer.StreamDecoder(), [], False
    for t, (i, starts) in enumerate(zip(ids, marks, strict=True)):
        pending |= starts and t > 0
        text = decoder.push([i])
        if text:
            pieces.append((mark if pending else "") + text)
            pending = False
    return "".join(pieces) + decoder.flush()


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
    mark_chunks: bool = False,
    write: Callable[[str], None] = write_stdout,
) -> None:
    """Samples from the run in `checkpoint_dir`: `num_samples` continuations of `prompt`, or with
    `loop` the interactive prompt loop (starting from `prompt` when one is given). With `mark_chunks`,
    each sample is printed whole once drawn, a `|` before every byte where the model starts a chunk."""
    model, variables = load_model(checkpoint_dir, config)
    sampler = make_sampler(model, variables, decode, chunk)
    if loop:
        interactive(sampler, list(prompt or b""), settings, write)
        return
    if not mark_chunks:
        print_samples(sampler, prompt, settings, num_samples, write)
        return
    seen = models.seen_forward(model)  # compiled once for the check and every sample
    chunk_starts(model, variables, list(prompt), seen)  # a model that does not chunk is refused before sampling
    for i, row in enumerate(sampler.generate(list(prompt), settings, num_samples=num_samples)):
        ids = list(prompt) + [int(t) for t in row]
        if num_samples > 1:
            write(f"--- sample {i + 1} of {num_samples} (seed {settings.seed + i}) ---\n")
        write(marked_text(ids, chunk_starts(model, variables, ids, seen)) + "\n")
