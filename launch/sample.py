"""Samples a continuation from a trained run.

    python -m launch.sample --checkpoint_dir=runs/gpt2_tiny --prompt="ROMEO:" --generate=220 \
        --temperature=0.85 --top_k=24 --repeat_penalty=1.25 --repeat_window=24 --seed=11

Rebuilds the model from DIR/config.json, loads DIR/params.json with the shape check and samples
(no optimizer is created). Flags left out take the run's `config.sample` values. Compiled programs
go to the run's `runtime.compilation_cache_dir`, as in training, so a second call starts faster.
--interactive opens a prompt loop: each line typed is appended to the context as typed and
continued; `:show` prints the context, `:clear` resets it, `:q` or an empty line exits.
"""

from absl import flags

from bytelm import config_base
from bytelm.artifacts import run_dir
from bytelm.errors import UsageError
from bytelm.interop import huggingface
from bytelm.sampling.settings import DECODERS, SampleSettings, prompt_bytes
from launch import cli

FALLBACK_GENERATE = 220  # a run trained with sample.generate=0 still samples something by default
_DIR = flags.DEFINE_string("checkpoint_dir", None, "a training run's workdir, or a folder launch.export wrote")
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
_MARK_CHUNKS = flags.DEFINE_bool(
    "mark_chunks", False, "print each sample whole with '|' before every byte that starts a chunk (hierarchical models)"
)
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


def main() -> None:
    # A training run's folder, or a transformers folder that launch.export wrote (it carries the config).
    is_export = huggingface.is_export(_DIR.value)
    config = huggingface.bytelm_config(_DIR.value) if is_export else run_dir.read_config(_DIR.value)
    # Every setting is checked before the model is built and the weights are loaded: a typo fails at once.
    settings = settings_from_flags(config.sample)
    prompt = prompt_bytes(_PROMPT.value if _PROMPT.value is not None else config.sample.prompt)
    defaults = config_base.sample_config()  # for runs whose config.json predates a field
    decode = _DECODE.value or config.sample.get("decode", defaults.decode)
    chunk = _STREAM_CHUNK.value or config.sample.get("stream_chunk", defaults.stream_chunk)
    if _NUM_SAMPLES.value < 1 or chunk < 1:
        raise UsageError(f"--num_samples and --stream_chunk must be at least 1, got {_NUM_SAMPLES.value} and {chunk}")
    if _MARK_CHUNKS.value and _INTERACTIVE.value:
        raise UsageError("--mark_chunks marks printed samples and does not work with --interactive; drop one of them")
    settings.validate(b"x" if _INTERACTIVE.value else prompt)  # interactive prompts come line by line
    # Imported once the flags and settings are known good: JAX and friends take seconds to import.
    from bytelm.sampling import console
    from launch import process

    process.use_compilation_cache(config.get("runtime") or config_base.runtime_config())  # as training did
    given = prompt if _PROMPT.value is not None else None  # the loop starts empty unless a prompt is given
    console.sample_run(
        _DIR.value,
        config,
        settings,
        given if _INTERACTIVE.value else prompt,
        decode=decode,
        chunk=chunk,
        num_samples=_NUM_SAMPLES.value,
        loop=_INTERACTIVE.value,
        mark_chunks=_MARK_CHUNKS.value,
    )


if __name__ == "__main__":
    cli.run(main)
