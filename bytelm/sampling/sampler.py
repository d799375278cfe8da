"""The interface every decoder implements, so that callers never ask which decoder they hold."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence

import numpy as np

from bytelm.sampling.settings import SampleSettings


def padded(n: int) -> int:
    """`n` rounded up to a power of two (at least 16): the static lengths that nearby lengths share, so
    that a decoder compiles a few programs rather than one per length."""
    return 1 << max(4, math.ceil(math.log2(max(n, 1))))


class Sampler(abc.ABC):
    """A decoder bound to one model and its weights."""

    @abc.abstractmethod
    def generate(
        self,
        prompt_ids: Sequence[int],
        settings: SampleSettings,
        *,
        num_samples: int = 1,
        start_index: int = 0,
        on_ids: Callable[[np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """`settings.generate` ids after `prompt_ids` for each of `num_samples` samples: int32
        `[num_samples, generate]`.

        Sample i uses the seed `settings.seed + i`, so it is exactly the single sample of that seed;
        the byte generated k-th uses token index `start_index + k`. `on_ids` receives new ids
        `[num_samples, n]` as soon as the decoder has them (for streaming)."""

    def continue_ids(
        self,
        history: list[int],
        settings: SampleSettings,
        *,
        start_index: int = 0,
        on_token: Callable[[int], None] | None = None,
    ) -> list[int]:
        """One sample appended to `history`, each new id passed to `on_token` as it comes; returns the
        new ids."""

        def emit(ids_NxC: np.ndarray) -> None:
            for tok in ids_NxC[0]:
                on_token(int(tok))

        new = self.generate(history, settings, start_index=start_index, on_ids=emit if on_token else None)
        ids = [int(t) for t in new[0]]
        history.extend(ids)
        return ids
