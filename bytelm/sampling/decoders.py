"""A decoder by name, and a continuation as text."""

from __future__ import annotations

from collections.abc import Callable

from bytelm.data import tokenizer
from bytelm.errors import UsageError
from bytelm.sampling.fast import FastSampler
from bytelm.sampling.reference import ReferenceSampler
from bytelm.sampling.sampler import Sampler
from bytelm.sampling.settings import DECODERS, SampleSettings


def make_sampler(model, variables, decode: str = "fast", stream_chunk: int = 16) -> Sampler:
    """The decoder `decode` for `model` and its `variables`; every decoder gives the same bytes.

    `'fast'`: the decoding protocol in one compiled loop, streaming `stream_chunk` bytes at a time.
    `'reference'`: the plain Python loop, one forward pass over the context per byte."""
    if decode == "fast":
        return FastSampler(model, variables, chunk=stream_chunk)
    if decode == "reference":
        return ReferenceSampler(model, variables)
    raise UsageError(f"unknown decode {decode!r}: choose one of {', '.join(DECODERS)}")


def sample_text(
    model,
    variables,
    prompt: str | bytes,
    settings: SampleSettings,
    *,
    on_text: Callable[[str], None] | None = None,
    decode: str = "fast",
    stream_chunk: int = 16,
) -> str:
    """Validates the settings, generates a continuation of `prompt` and returns it as text.

    `on_text` receives the text as it completes (whole UTF-8 characters), for streaming.
    """
    settings.validate(prompt)
    sampler = make_sampler(model, variables, decode, stream_chunk)
    decoder = tokenizer.StreamDecoder()
    pieces: list[str] = []

    def emit(text: str) -> None:
        if text:
            pieces.append(text)
            if on_text is not None:
                on_text(text)

    sampler.continue_ids(list(tokenizer.encode(prompt)), settings, on_token=lambda tok: emit(decoder.push([tok])))
    emit(decoder.flush())
    return "".join(pieces)
