"""Stopping training on SIGINT, SIGTERM and SIGHUP at the end of an iteration, with a
checkpoint (a second signal stops at once). Helper processes (env workers, the value fit)
ignore them: the training process stops them."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any

__all__ = ["StopOnSignals"]


class StopOnSignals:
    """While installed (main thread; ``active``), the first stop signal sets ``signal_name``
    (stop after this iteration); a second raises KeyboardInterrupt. SIGHUP (the terminal
    closed) stops as SIGTERM does."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                    if hasattr(signal, name))  # fmt: skip

    def __init__(self, active: bool = True) -> None:
        self.active = active
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> StopOnSignals:
        if self.active and threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, number: int, frame: object) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(number).name
        message = f"trpo: {self.signal_name} received: stopping after this iteration with a checkpoint (send it again to stop at once)"  # noqa: E501
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            print(message, file=sys.stderr, flush=True)
