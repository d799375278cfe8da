"""How each sampled byte is chosen (`SampleSettings`) and which decoders exist.

Plain Python with no JAX import, so that `launch.sample` checks its flags and settings in a
fraction of a second before it loads JAX and the weights. The choice itself is in `choice.py`.
"""

from __future__ import annotations

import dataclasses

from bytelm.data import tokenizer
from bytelm.errors import UsageError

DECODERS = ("fast", "reference")  # cached compiled loop; one model call per byte (same bytes)


@dataclasses.dataclass(frozen=True)
class SampleSettings:
    """How to choose each byte. Frozen and hashable: it is a static argument of the jitted chooser."""

    generate: int = 220  # bytes to generate
    temperature: float = 0.85  # 0 = greedy
    top_k: int = 24  # 0 = all 256; 1 = greedy
    repeat_penalty: float = 0.0  # logits subtracted per occurrence in the window
    repeat_window: int = 0  # how many recent ids the penalty looks at; 0 = off
    seed: int = 0
    ascii_only: bool = False

    @classmethod
    def from_config(cls, sample_config) -> SampleSettings:
        return cls(
            generate=sample_config.generate,
            temperature=float(sample_config.temperature),
            top_k=sample_config.top_k,
            repeat_penalty=float(sample_config.repeat_penalty),
            repeat_window=sample_config.repeat_window,
            seed=sample_config.seed,
            ascii_only=bool(sample_config.ascii_only),
        )

    def validate(self, prompt: bytes | str) -> None:
        """Raises a one-line `UsageError` naming the first invalid setting."""
        if self.generate < 0:
            raise UsageError(f"generate must be >= 0, got {self.generate}")
        if not self.temperature >= 0 or self.temperature == float("inf"):
            raise UsageError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature}")
        if not 0 <= self.top_k <= tokenizer.VOCAB_SIZE:
            raise UsageError(f"top_k must lie in 0..{tokenizer.VOCAB_SIZE} (0 = all), got {self.top_k}")
        if not self.repeat_penalty >= 0 or self.repeat_penalty == float("inf"):
            raise UsageError(f"repeat_penalty must be a finite number >= 0, got {self.repeat_penalty}")
        if self.repeat_window < 0:
            raise UsageError(f"repeat_window must be >= 0, got {self.repeat_window}")
        if self.generate > 0 and len(prompt) == 0:
            raise UsageError("the prompt is empty: give at least one byte to continue (e.g. --prompt='ROMEO:')")

    def static_part(self) -> SampleSettings:
        """These settings with `generate` and `seed` zeroed: the static argument a compiled decoder is
        specialised on.

        Neither changes the traced program (the seed reaches it as an array, the length as loop
        bounds), so a new seed or length reuses the compiled loop instead of compiling another."""
        return dataclasses.replace(self, generate=0, seed=0)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


def prompt_bytes(text: str) -> bytes:
    """A prompt as UTF-8 bytes; a one-line `UsageError` when it is not text (argv bytes that are not
    UTF-8 arrive as lone surrogates)."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError("the prompt is not valid UTF-8: pass it in UTF-8 (check your terminal's locale)") from None
