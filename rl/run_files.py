"""The run directory: config.yaml, metrics.jsonl, evals.jsonl and the final model."""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import socket
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rl.errors import RunDirError, first_line

__all__ = ["ALL_RUN_FILES", "CHECKPOINT_FILE", "CHECKPOINT_FORMAT", "CONFIG_FILE", "EVALS_FILE",
           "METRICS_FILE", "MODEL_FILE", "PREVIOUS_CHECKPOINT_FILE", "CheckpointError",
           "RunFiles", "UnsafeCheckpointError", "atomic_torch_save", "atomic_write_text",
           "json_line", "load_plain_file", "remove_stale_temporaries"]  # fmt: skip

CONFIG_FILE, METRICS_FILE, EVALS_FILE = "config.yaml", "metrics.jsonl", "evals.jsonl"
MODEL_FILE = "model.pt"
CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE = "checkpoint.pt", "checkpoint.prev.pt"
CHECKPOINT_FORMAT = "rl.trpo.checkpoint/1"
# Every file a run writes: a directory holding any of them holds a run.
ALL_RUN_FILES = (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE, MODEL_FILE, CONFIG_FILE,
                 METRICS_FILE, EVALS_FILE)  # fmt: skip


def json_line(row: dict[str, Any]) -> str:
    """Strict JSON (NaN and infinities become null) on one line."""
    clean = {}
    for key, value in row.items():
        value = value.item() if isinstance(value, np.generic) else value
        clean[key] = None if isinstance(value, float) and not math.isfinite(value) else value
    return json.dumps(clean, allow_nan=False)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` over ``path`` atomically (``atomic_torch_save``'s way)."""
    _atomic_write(path, lambda file: file.write(text.encode()))


class RunFiles:
    """Writes one run's files under ``directory`` (created if missing)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        with self._writing("create"):
            self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def model_path(self) -> Path:
        return self.directory / MODEL_FILE

    def write_config(self, config_yaml: str) -> None:
        """Write config.yaml atomically (the first write: a bad run_dir fails early)."""
        with self._writing(f"write {CONFIG_FILE} in"):
            atomic_write_text(self.directory / CONFIG_FILE, config_yaml)

    @contextlib.contextmanager
    def _writing(self, action: str) -> Iterator[None]:
        """Raise the OSErrors of a write as ``rl.errors.RunDirError`` naming the directory."""
        try:
            yield
        except OSError as error:
            raise RunDirError(
                f"cannot {action} the run directory {str(self.directory)!r}: "
                f"{error.strerror or error} (a read-only or full file system?); choose another "
                "run_dir or free some space"
            ) from error

    def append_metrics(self, row: dict[str, Any]) -> None:
        self._append(METRICS_FILE, row)

    def append_eval(self, row: dict[str, Any]) -> None:
        self._append(EVALS_FILE, row)

    def _append(self, name: str, row: dict[str, Any]) -> None:
        with self._writing(f"append to {name} in"), open(self.directory / name, "a") as file:
            file.write(json_line(row) + "\n")

    def drop_rows_after(self, iteration: int, step: int) -> list[str]:
        """Keep the metrics rows up to ``iteration`` and the evaluation rows up to ``step``
        (and no unreadable line); returns a sentence per file that held unreadable lines."""
        repairs = [
            self._keep_rows(METRICS_FILE, lambda row: row.get("iteration", 0) <= iteration),
            self._keep_rows(EVALS_FILE, lambda row: row.get("step", 0) <= step),
        ]
        return [repair for repair in repairs if repair]

    def _keep_rows(self, name: str, keep: Callable[[dict[str, Any]], bool]) -> str:
        path = self.directory / name
        if not path.exists():
            return ""
        kept, unreadable = [], []
        for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
            try:
                line = raw.decode("utf-8")
                row = json.loads(line)
            except ValueError:  # UnicodeDecodeError, json.JSONDecodeError
                row = None
            if isinstance(row, dict) and keep(row):
                kept.append(line + "\n")
            elif not isinstance(row, dict) and raw.strip():
                unreadable.append(number)
        with self._writing(f"rewrite {name} in"):
            atomic_write_text(path, "".join(kept))
        if not unreadable:
            return ""
        lines = ", ".join(map(str, unreadable[:5])) + (", ..." if len(unreadable) > 5 else "")
        return (
            f"{name}: dropped {len(unreadable)} unreadable line(s) (not UTF-8 or not JSON: "
            f"line {lines}); kept the {len(kept)} intact row(s) up to the checkpoint"
        )


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the run it is loaded into."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A file holding more than plain data (e.g. built to run code): refused unrun."""


def atomic_torch_save(state: Any, path: str | Path, previous: str | Path | None = None) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync it, then rename it over
    ``path`` (with ``previous``, the file ``path`` held is first kept as ``previous``): a
    crash leaves each old or new and complete (docs/checkpoints.md)."""
    _atomic_write(Path(path), lambda file: torch.save(state, file), previous)


def _atomic_write(
    path: Path, write: Callable[[Any], Any], previous: str | Path | None = None
) -> None:
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.{writer_tag()}.", suffix=".tmp", dir=path.parent
    )
    try:
        os.chmod(temporary, 0o666 & ~_UMASK)  # as open() makes files, not mkstemp's 0600
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        if previous is not None and path.exists():
            _keep_as_previous(path, Path(previous))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def _keep_as_previous(path: Path, previous: Path) -> None:
    """Make ``previous`` name ``path``'s file, ``path`` named all along (a hard link renamed
    over it; where links are refused, ``path`` is renamed: resume falls back to it)."""
    link = previous.with_name(f".{previous.name}.{writer_tag()}.link.tmp")
    link.unlink(missing_ok=True)
    try:
        os.link(path, link)
    except OSError:
        os.replace(path, previous)
        return
    try:
        os.replace(link, previous)
    except BaseException:
        link.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete (and return) the temporary files that writes killed midway left in
    ``directory``: only those of this host's processes (``writer_tag``) no longer alive."""
    stale = [
        path
        for name in ALL_RUN_FILES
        for path in Path(directory).glob(f".{name}.*.tmp")
        if path.is_file() and not _writer_alive(path.name[len(name) + 2 :].split(".")[0])
    ]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def writer_tag() -> str:
    """``HOST-PID`` of this process, for temporary names (the host name without dots)."""
    host = "".join(c if c.isalnum() or c in "_-" else "_" for c in socket.gethostname())
    return f"{host}-{os.getpid()}"


def _writer_alive(tag: str) -> bool:
    """Whether writer ``tag`` (HOST-PID, or an old bare PID) may still write (if unsure)."""
    host, _, pid = tag.rpartition("-")
    if (host and host != writer_tag().rpartition("-")[0]) or not pid.isdigit():
        return True  # another node's process (its id says nothing here), or no id
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, as another user's
        return True
    return True


def _fsync_directory(directory: Path) -> None:
    """Make the renames durable (POSIX); a no-op where directories cannot be opened."""
    with contextlib.suppress(OSError):
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def load_plain_file(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU; failures as one-line
    CheckpointErrors (unreadable, not plain data, truncated or corrupt)."""
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below; errors here are not corruption
    except OSError as error:
        raise CheckpointError(f"cannot read {str(path)!r}: {error.strerror or error}") from None
    with file:
        if not zipfile.is_zipfile(file):  # torch.save writes zip archives; this is not one
            raise CheckpointError(
                f"{str(path)!r} is truncated or corrupt: not a whole file written by torch.save"
            )
        file.seek(0)
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise UnsafeCheckpointError(
                f"{str(path)!r} holds objects other than tensors, numbers and strings; refused: "
                f"Weights only load failed ({_unpickler_reason(error)}); rl loads files with "
                "weights_only=True and never runs code from them"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
            raise CheckpointError(
                f"{str(path)!r} is truncated or corrupt: {first_line(error)}"
            ) from None


def _unpickler_reason(error: pickle.UnpicklingError) -> str:
    """torch's one-sentence reason, without its advice to load the file unsafely."""
    _, marker, reason = str(error).partition("WeightsUnpickler error:")
    return reason.strip().split(". ")[0] if marker else first_line(error)
