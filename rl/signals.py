"""Stopping training on SIGINT, SIGTERM and SIGHUP at the end of an iteration.

Signals: while ``learn`` writes a run directory, the first SIGINT or SIGTERM lets the
current iteration finish, writes a checkpoint and returns (``agent.stopped_by``); a second
one interrupts at once, and the last periodic checkpoint stays. AsyncVectorEnv workers
ignore both signals, so that a Ctrl-C sent to the whole process group does not kill them
before the checkpoint is taken; they exit when the main process closes them.

"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Any

__all__ = ["StopOnSignals"]


class StopOnSignals:
    """While installed (in the main thread), the first SIGINT, SIGTERM or SIGHUP asks for a stop at
    the end of the current iteration (``signal_name`` becomes ``"SIGINT"``/``"SIGTERM"``);
    a second one raises KeyboardInterrupt at once. ``uninstall`` restores the previous
    handlers.

    Args:
        active (bool): with False, ``install`` does nothing (default: True).
    """

    # SIGHUP: the terminal was closed (an ssh session dropped): stop as for SIGTERM.
    SIGNALS = (
        signal.SIGINT,
        signal.SIGTERM,
        *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []),
    )

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

    def __enter__(self) -> StopOnSignals:
        return self.install()

    def __exit__(self, *exc_info: object) -> None:
        self.uninstall()

    def _handle(self, number: int, frame: object) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(number).name
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            print(
                f"trpo: {self.signal_name} received: stopping after this iteration with a "
                "checkpoint (send it again to stop at once)",
                file=sys.stderr,
                flush=True,
            )
