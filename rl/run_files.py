"""The run directory: config.yaml, metrics.jsonl, evals.jsonl and the final model."""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rl.errors import RunDirError

__all__ = [
    "CONFIG_FILE",
    "EVALS_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "RunFiles",
    "atomic_write_text",
    "json_line",
]

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
EVALS_FILE = "evals.jsonl"
MODEL_FILE = "model.pt"


def json_line(row: dict[str, Any]) -> str:
    """Strict JSON (NaN and infinities become null) on one line."""
    clean = {key: _finite_or_none(value) for key, value in row.items()}
    return json.dumps(clean, allow_nan=False)


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it and rename it over
    ``path``: a crash leaves the old file or the new one, never a torn one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


class RunFiles:
    """Writes one run's files under ``directory`` (created if missing).

    Example:
        >>> files = RunFiles("runs/demo")  # doctest: +SKIP
        >>> files.append_metrics({"step": 2048, "kl": 0.009})  # doctest: +SKIP
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        with self._writing("create"):
            self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def model_path(self) -> Path:
        return self.directory / MODEL_FILE

    def write_config(self, config_yaml: str) -> None:
        """Write config.yaml atomically (temporary file, fsync, rename): the first write of
        ``learn``, so an unwritable run directory is reported before training starts."""
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
        """Keep the metrics rows up to ``iteration`` and the evaluation rows up to ``step``,
        dropping what a stopped run wrote after its last checkpoint. Lines that are not
        UTF-8 or not JSON objects (a torn write, a garbled disk) are dropped too.

        Returns:
            list[str]: one sentence per file that held such lines, saying what was repaired.
        """
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
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                row = None
            if not isinstance(row, dict):
                if raw.strip():
                    unreadable.append(number)
                continue
            if keep(row):
                kept.append(raw.decode("utf-8") + "\n")
        with self._writing(f"rewrite {name} in"):
            atomic_write_text(path, "".join(kept))
        if not unreadable:
            return ""
        lines = ", ".join(map(str, unreadable[:5])) + (", ..." if len(unreadable) > 5 else "")
        return (
            f"{name}: dropped {len(unreadable)} unreadable line(s) (not UTF-8 or not JSON: "
            f"line {lines}); kept the {len(kept)} intact row(s) up to the checkpoint"
        )
