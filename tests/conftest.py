"""Helpers shared by the test files (imported as ``tests.conftest``)."""

from __future__ import annotations

import json
from pathlib import Path

# metrics and evaluation fields that vary between runs of the same code
TIMING_KEYS = {"fps", "time", "rollout_time", "update_time"}


def rows(run_dir: str | Path, name: str = "metrics.jsonl") -> list[dict]:
    """The rows of ``run_dir/name`` without their timing fields."""
    lines = (Path(run_dir) / name).read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS} for line in lines]
