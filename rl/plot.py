"""Learning curves of run directories (``trpo plot``): runs differing only in the seed are drawn
as their mean ± one std; drawn on matplotlib's Agg canvas directly, so it works headless."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from rl.config import flatten_dict
from rl.run_files import CONFIG_FILE, EVALS_FILE, METRICS_FILE

__all__ = ["RunCurve", "group_runs", "plot_runs", "read_run", "run_directories"]

Source = Literal["train", "eval"]
Axis = Literal["steps", "seconds"]
GRID_POINTS = 200
# Settings that do not change what a run learns: runs differing only here are one group.
_NOT_GROUPED = {
    "seed", "run_dir", "total_steps", "device", "torch_threads", "eval_every",
    "eval_episodes", "checkpoint_every", "vector_mode", "episode_window",
}  # fmt: skip


@dataclass(frozen=True)
class RunCurve:
    """One run's returns at ``steps`` and ``seconds`` (increasing across resumes);
    ``settings``: its config flattened to dotted keys, without ``_NOT_GROUPED`` keys."""

    run_dir: Path
    settings: dict[str, Any]
    steps: np.ndarray
    seconds: np.ndarray
    returns: np.ndarray

    @property
    def env_id(self) -> str:
        return str(self.settings.get("env_id") or self.run_dir.name)


def run_directories(paths: Iterable[str | Path]) -> list[Path]:
    """Each path that holds metrics.jsonl, or else its sub-directories that do, sorted."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / METRICS_FILE).is_file():
            found.append(path)
            continue
        children = sorted(p.parent for p in path.glob(f"*/{METRICS_FILE}"))
        if not children:
            raise FileNotFoundError(f"RUN_DIR = {str(path)!r}: no {METRICS_FILE} in it or below")
        found += children
    return found


def read_run(run_dir: str | Path, source: Source = "train") -> RunCurve:
    """The returns of metrics.jsonl (train) or evals.jsonl (eval), rows without one skipped."""
    run_dir = Path(run_dir)
    name, key = (
        (METRICS_FILE, "episode_return_mean") if source == "train" else (EVALS_FILE, "mean_return")
    )
    rows = _read_jsonl(run_dir / name)
    seconds = _cumulative_seconds([float(row.get("time") or 0.0) for row in rows])
    points = [
        (row["step"], second, row[key])
        for row, second in zip(rows, seconds, strict=True)
        if row.get(key) is not None and row.get("step") is not None
    ]
    steps, kept_seconds, returns = np.array(points, dtype=np.float64).reshape(-1, 3).T
    return RunCurve(run_dir, _settings(run_dir), steps, kept_seconds, returns)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a blank line, or one cut by a crash
            rows.append(json.loads(line))
    return rows


def _cumulative_seconds(times: Sequence[float]) -> list[float]:
    """Wall time restarts at 0 when a run is resumed: add the time already spent before."""
    offset, previous, result = 0.0, 0.0, []
    for time in times:
        if time < previous:
            offset += previous
        result.append(offset + time)
        previous = time
    return result


def _settings(run_dir: Path) -> dict[str, Any]:
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        return {}
    data = yaml.safe_load(config_path.read_text()) or {}
    flat = flatten_dict(data) if isinstance(data, dict) else {}
    return {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in flat.items()
        if key.split(".")[0] not in _NOT_GROUPED
    }


def group_runs(runs: Sequence[RunCurve]) -> list[tuple[str, list[RunCurve]]]:
    """Runs with equal settings grouped, in first-seen order, each labelled by its env id and
    the (at most four) settings that tell the groups apart."""
    groups: dict[str, list[RunCurve]] = {}
    for run in runs:
        groups.setdefault(repr(sorted(run.settings.items())), []).append(run)
    all_settings = [members[0].settings for members in groups.values()]
    names = sorted(set().union(*all_settings) - {"env_id"})
    differing = [name for name in names if len({repr(s.get(name)) for s in all_settings}) > 1][:4]
    labelled = []
    for members in groups.values():
        settings = members[0].settings
        details = ", ".join(f"{name}={_short(settings.get(name))}" for name in differing)
        label = members[0].env_id + (f" ({details})" if details else "")
        labelled.append((f"{label} [{len(members)} run{'s' if len(members) > 1 else ''}]", members))
    return labelled


def _short(value: Any) -> str:
    """A setting as a legend shows it: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _mean_and_std(
    runs: Sequence[RunCurve], axis: Axis
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Mean and std across runs: at their points if all runs share them, else on a grid over
    the range all runs cover (None if they cover no common range)."""
    xs = [getattr(run, axis) for run in runs]
    if all(np.array_equal(x, xs[0]) for x in xs):
        values = np.stack([run.returns for run in runs])
        return xs[0], values.mean(axis=0), values.std(axis=0)
    low, high = max(x[0] for x in xs), min(x[-1] for x in xs)
    if high <= low:
        return None
    grid = np.linspace(low, high, GRID_POINTS)
    values = np.stack([np.interp(grid, x, run.returns) for x, run in zip(xs, runs, strict=True)])
    return grid, values.mean(axis=0), values.std(axis=0)


def plot_runs(run_dirs: Iterable[str | Path], out: str | Path, source: Source = "train") -> Path:
    """Draw return vs env steps and vs wall time of ``run_dirs`` (or folders of them) into
    ``out`` (``.png`` added without a suffix; returned). ``source``: "train" or "eval".
    FileNotFoundError for a directory without metrics; ValueError if nothing to draw."""
    runs = [read_run(path, source) for path in run_directories(run_dirs)]
    runs = [run for run in runs if len(run.steps)]
    if not runs:
        raise ValueError(f"no {source} returns to plot yet (no episode has finished)")
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    by_steps, by_time = figure.subplots(1, 2, sharey=True)
    time_scale, time_unit = _time_unit(max(run.seconds[-1] for run in runs))
    for index, (label, members) in enumerate(group_runs(runs)):
        color = f"C{index % 10}"
        _draw_group(by_steps, members, "steps", 1.0, color, label)
        _draw_group(by_time, members, "seconds", time_scale, color, None)
    ylabel = "mean training episode return" if source == "train" else "mean evaluation return"
    by_steps.set(xlabel="env steps", ylabel=ylabel, title="return vs env steps")
    by_time.set(xlabel=f"wall time ({time_unit})", title="return vs wall time")
    for axes in (by_steps, by_time):
        axes.grid(alpha=0.3)
    by_steps.legend(loc="best", fontsize="small")
    out = Path(out)
    if not out.suffix:  # matplotlib would add ".png" itself: return the path it writes
        out = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    return out


def _time_unit(longest_seconds: float) -> tuple[float, str]:
    if longest_seconds >= 2 * 3600:
        return 1 / 3600, "h"
    if longest_seconds >= 600:
        return 1 / 60, "min"
    return 1.0, "s"


def _draw_group(
    axes: Any, runs: Sequence[RunCurve], axis: Axis, scale: float, color: str, label: str | None
) -> None:
    if len(runs) == 1:
        x = getattr(runs[0], axis) * scale
        axes.plot(x, runs[0].returns, color=color, label=label, marker=_marker(x))
        return
    summary = _mean_and_std(runs, axis)
    for index, run in enumerate(runs):
        x = getattr(run, axis) * scale
        thin_label = label if summary is None and index == 0 else None
        axes.plot(
            x, run.returns, color=color, alpha=0.35, lw=0.8, marker=_marker(x), label=thin_label
        )
    if summary is not None:
        grid, mean, std = summary
        axes.plot(grid * scale, mean, color=color, lw=2, label=label, marker=_marker(grid))
        axes.fill_between(grid * scale, mean - std, mean + std, color=color, alpha=0.2)


def _marker(x: np.ndarray) -> str | None:
    """Dots where a line would be too short to see (a run with few points)."""
    return "o" if len(x) < 3 else None
