"""The run directory: config.yaml, metrics.jsonl, evals.jsonl and the final model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CONFIG_FILE", "EVALS_FILE", "METRICS_FILE", "MODEL_FILE", "RunFiles", "json_line"]

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


class RunFiles:
    """Writes one run's files under ``directory`` (created if missing).

    Example:
        >>> files = RunFiles("runs/demo")  # doctest: +SKIP
        >>> files.append_metrics({"step": 2048, "kl": 0.009})  # doctest: +SKIP
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def model_path(self) -> Path:
        return self.directory / MODEL_FILE

    def write_config(self, config_yaml: str) -> None:
        (self.directory / CONFIG_FILE).write_text(config_yaml)

    def append_metrics(self, row: dict[str, Any]) -> None:
        self._append(METRICS_FILE, row)

    def append_eval(self, row: dict[str, Any]) -> None:
        self._append(EVALS_FILE, row)

    def _append(self, name: str, row: dict[str, Any]) -> None:
        with open(self.directory / name, "a") as file:
            file.write(json_line(row) + "\n")
