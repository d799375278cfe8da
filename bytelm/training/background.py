"""Compiling the train step on a side thread while the devices run the step-0 evaluation."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class BackgroundCompile:
    """Traces, lowers and compiles `train_step` for `args` on a side thread (`result()` waits for it).

    Compiling is mostly single-threaded host work; the step-0 evaluation runs on the devices
    meanwhile, so the two overlap instead of queueing. Only shapes and shardings of `args` are read:
    nothing is donated until the compiled step runs."""

    def __init__(self, train_step, *args):
        self.compiled, self.error, self.seconds = None, None, 0.0
        self.thread = threading.Thread(target=self._run, args=(train_step, args), daemon=True)
        self.thread.start()

    def _run(self, train_step, args) -> None:
        t = time.perf_counter()
        try:
            self.compiled = train_step.lower(*args).compile()
        except BaseException as e:  # re-raised on the caller's thread by result()
            self.error = e
        self.seconds = time.perf_counter() - t

    def result(self) -> Callable:
        """The compiled step (seconds it took: `self.seconds`); re-raises what compiling raised."""
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.compiled
