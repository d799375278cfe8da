"""Samples a continuation from a trained run.

    python -m launch.sample --checkpoint_dir=runs/gpt2_tiny --prompt="ROMEO:" --generate=220 \
        --temperature=0.85 --top_k=24 --repeat_penalty=1.25 --repeat_window=24 --seed=11

Rebuilds the model from DIR/config.json, loads DIR/params.json with the shape check and samples
(no optimizer is created). Flags left out take the run's `config.sample` values. Compiled programs
go to the run's `runtime.compilation_cache_dir`, as in training, so a second call starts faster.
--interactive opens a prompt loop: each line typed is appended to the context as typed and
continued; `:show` prints the context, `:clear` resets it, `:q` or an empty line exits.
"""

import dataclasses
import sys

from absl import flags

from bytelm import config_base, run_dir, tokenizer
from bytelm.errors import UsageError
from bytelm.sample_settings import DECODERS, SampleSettings
from launch import cli

FALLBACK_GENERATE = 220  # a run trained with sample.generate=0 still samples something by default
_DIR = flags.DEFINE_string("checkpoint_dir", None, "a training run's workdir")
_PROMPT = flags.DEFINE_string("prompt", None, "text to continue (default: the run's sample.prompt)")
_GENERATE = flags.DEFINE_integer(
    "generate", None, f"bytes to generate (default: the run's sample.generate, or {FALLBACK_GENERATE} if that is 0)"
)
_TEMPERATURE = flags.DEFINE_float("temperature", None, "softmax temperature; 0 = greedy")
_TOP_K = flags.DEFINE_integer("top_k", None, "keep the k most likely bytes; 0 = all, 1 = greedy")
_REPEAT_PENALTY = flags.DEFINE_float("repeat_penalty", None, "subtracted per occurrence in the window")
_REPEAT_WINDOW = flags.DEFINE_integer("repeat_window", None, "recent bytes the penalty looks at; 0 = off")
_SEED = flags.DEFINE_integer("seed", None, "sampling seed")
_ASCII_ONLY = flags.DEFINE_bool("ascii_only", None, "only newline and printable ASCII")
_INTERACTIVE = flags.DEFINE_bool("interactive", False, "a prompt loop (:show, :clear, :q)")
_DECODE = flags.DEFINE_enum(
    "decode",
    None,
    list(DECODERS),
    "fast (cached, compiled loop) or reference (one model call per byte); same text",
)
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1, "independent continuations; sample i uses seed + i")
_STREAM_CHUNK = flags.DEFINE_integer("stream_chunk", None, "bytes per compiled chunk of the fast sampler")
flags.mark_flag_as_required("checkpoint_dir")


def settings_from_flags(sample_config) -> SampleSettings:
    """The run's sample settings with every flag that was given put over them."""
    merged = sample_config.to_dict()
    merged["generate"] = merged["generate"] or FALLBACK_GENERATE
    for name, flag in (
        ("generate", _GENERATE),
        ("temperature", _TEMPERATURE),
        ("top_k", _TOP_K),
        ("repeat_penalty", _REPEAT_PENALTY),
        ("repeat_window", _REPEAT_WINDOW),
        ("seed", _SEED),
        ("ascii_only", _ASCII_ONLY),
    ):
        if flag.value is not None:
            merged[name] = flag.value
    return SampleSettings.from_config(type(sample_config)(merged))


def prompt_bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # argv bytes that are not UTF-8 arrive as lone surrogates
        raise UsageError("the prompt is not valid UTF-8: pass it in UTF-8 (check your terminal's locale)") from None


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def interactive(sampler, history: list[int], settings: SampleSettings) -> None:
    index = 0  # token index across turns, so the whole session depends only on the seed and inputs
    print("interactive: type text to continue; :show, :clear, :q (or an empty line) to quit", flush=True)
    while True:
        try:
            line = input("> ")
        except EOFError:
            return
        if line in ("", ":q"):
            return
        if line == ":show":
            print(tokenizer.display(history) or "(empty)")
            continue
        if line == ":clear":
            history.clear()
            print("(context cleared)")
            continue
        history.extend(tokenizer.encode(prompt_bytes(line)).tolist())
        decoder = tokenizer.StreamDecoder()
        write(line)
        new = sampler.continue_ids(
            history, settings, start_index=index, on_token=lambda t, d=decoder: write(d.push([t]))
        )
        write(decoder.flush() + "\n")
        index += len(new)


def main() -> None:
    config = run_dir.read_config(_DIR.value)
    # Every setting is checked before the model is built and the weights are loaded: a typo fails at once.
    settings = settings_from_flags(config.sample)
    prompt = prompt_bytes(_PROMPT.value if _PROMPT.value is not None else config.sample.prompt)
    defaults = config_base.sample_config()  # for runs whose config.json predates a field
    decode = _DECODE.value or config.sample.get("decode", defaults.decode)
    chunk = _STREAM_CHUNK.value or config.sample.get("stream_chunk", defaults.stream_chunk)
    if _NUM_SAMPLES.value < 1 or chunk < 1:
        raise UsageError(f"--num_samples and --stream_chunk must be at least 1, got {_NUM_SAMPLES.value} and {chunk}")
    settings.validate(b"x" if _INTERACTIVE.value else prompt)  # interactive prompts come line by line
    # Imported once the flags and settings are known good: JAX and friends take ~1.5 s to import.
    import jax
    import jax.numpy as jnp

    from bytelm import models, param_pack, runtime, sampling

    runtime.use_compilation_cache(config.get("runtime") or config_base.runtime_config())  # as training did
    model = models.build(config.model)
    variables = param_pack.load_pack(f"{_DIR.value}/{run_dir.PARAMS_FILE}", models.abstract_variables(model))
    variables = jax.tree_util.tree_map(jnp.asarray, variables)
    sampler = sampling.make_sampler(model, variables, decode, chunk)
    if _INTERACTIVE.value:
        history = list(tokenizer.encode(prompt)) if _PROMPT.value is not None else []
        interactive(sampler, history, settings)
        return
    if decode == "fast" and _NUM_SAMPLES.value > 1:  # one batched call for all samples
        ids = sampler.generate(list(tokenizer.encode(prompt)), settings, num_samples=_NUM_SAMPLES.value)
        for i, row in enumerate(ids):
            write(f"--- sample {i + 1} of {_NUM_SAMPLES.value} (seed {settings.seed + i}) ---\n")
            write(prompt.decode("utf-8") + tokenizer.decode(row) + "\n")
        return
    for i in range(_NUM_SAMPLES.value):
        if _NUM_SAMPLES.value > 1:
            write(f"--- sample {i + 1} of {_NUM_SAMPLES.value} (seed {settings.seed + i}) ---\n")
        # Sample i is exactly the single sample with seed + i, whichever decoder runs it.
        seeded = dataclasses.replace(settings, seed=settings.seed + i)
        decoder = tokenizer.StreamDecoder()
        write(prompt.decode("utf-8"))
        sampler.continue_ids(list(tokenizer.encode(prompt)), seeded, on_token=lambda t, d=decoder: write(d.push([t])))
        write(decoder.flush() + "\n")


if __name__ == "__main__":
    cli.run(main)
