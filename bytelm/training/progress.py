"""Progress as a tqdm bar (on a terminal) or as plain lines every `log_every` steps."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

PROGRESS_MODES = ("auto", "bar", "lines", "none")


class Progress:
    """A context manager: the bar, if any, is closed on every way out of the `with` block."""

    def __init__(self, mode: str, total: int, log_every: int, out: Callable[[str], None], initial: int = 0):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode, self.total, self.log_every, self.out, self.initial = mode, total, log_every, out, initial
        self.bar = None
        self.t0 = time.perf_counter()

    def __enter__(self) -> Progress:
        if self.mode == "bar":
            from tqdm import tqdm  # a well-kept bar with ETA; only needed on a terminal

            self.bar = tqdm(total=self.total, initial=self.initial, unit="step", dynamic_ncols=True)
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def update(self, rec: dict) -> None:
        """One logged step: `rec` holds `step`, `loss`, `lr` and `tokens_per_s`."""
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{rec['loss']:.4f}", tok_s=f"{rec['tokens_per_s']:,.0f}", refresh=False)
        elif self.mode == "lines" and (rec["step"] % self.log_every == 0 or rec["step"] == self.total):
            done = rec["step"]
            elapsed = time.perf_counter() - self.t0
            eta = elapsed / (done - self.initial) * (self.total - done) if done > self.initial else 0.0
            self.out(
                f"step {done:>6}/{self.total}  loss {rec['loss']:.4f}  lr {rec['lr']:.2e}  "
                f"{rec['tokens_per_s']:>8,.0f} tok/s  ETA {eta:5.0f}s"
            )

    def write(self, text: str) -> None:
        """A whole line above the bar (or as a line of its own)."""
        if self.bar is not None:
            self.bar.write(text)
        else:
            self.out(text)
