"""Stop signals: SIGINT and SIGTERM ask the loop to stop after the current step."""

from __future__ import annotations

import signal
import threading


class StopSignals:
    """While active, SIGINT and SIGTERM set `received`; a second signal stops at once
    (`KeyboardInterrupt`). The previous handlers come back on every way out of the `with` block.
    Only the main thread can own signals, so elsewhere this does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __enter__(self) -> StopSignals:
        self.received: signal.Signals | None = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt  # the second Ctrl-C: the user does not want to wait
        self.received = signal.Signals(signum)

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
