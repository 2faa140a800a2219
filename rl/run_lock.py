"""One process at a time in a run directory (README): ``fcntl.flock`` on ``RUN_DIR/.lock``,
which the OS releases when its holder dies. Re-entrant within a process; the last release
removes it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from rl.errors import RunDirLockedError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no lock, as before
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "acquire_run_dir", "hold_run_dir", "release_run_dir"]

LOCK_FILE = ".lock"
_held: dict[Path, list[int]] = {}  # resolved directory -> [descriptor, holds]


def acquire_run_dir(directory: str | Path) -> None:
    """Take (or, in the process holding it, take again) the lock of ``directory``, which
    must exist. Raises RunDirLockedError when another live process holds it."""
    key = Path(directory).resolve()
    if key in _held:
        _held[key][1] += 1
        return
    if fcntl is None:  # pragma: no cover
        _held[key] = [-1, 1]
        return
    path = key / LOCK_FILE
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(descriptor, 64).decode(errors="replace").strip() or "unknown"
            os.close(descriptor)
            raise RunDirLockedError(
                f"run_dir {str(directory)!r} is in use by process {holder} (another trpo "
                "train or --resume); wait for it to end, or choose another run_dir"
            ) from None
        # The holder before us may have removed the file between our open and our lock:
        # then we hold a lock on a file nobody else will open. Start again.
        if _same_file(descriptor, path):
            break
        os.close(descriptor)
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    _held[key] = [descriptor, 1]


def release_run_dir(directory: str | Path) -> None:
    """Give one hold back; the last removes ``.lock`` and unlocks."""
    key = Path(directory).resolve()
    if key not in _held:
        return
    _held[key][1] -= 1
    if _held[key][1] > 0:
        return
    descriptor, _ = _held.pop(key)
    if descriptor >= 0:
        (key / LOCK_FILE).unlink(missing_ok=True)  # while still locked: none takes a stale file
        os.close(descriptor)


@contextlib.contextmanager
def hold_run_dir(directory: str | Path) -> Iterator[None]:
    """``acquire_run_dir`` for the duration of a ``with`` block."""
    acquire_run_dir(directory)
    try:
        yield
    finally:
        release_run_dir(directory)


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(descriptor), os.stat(path))
    except FileNotFoundError:
        return False
