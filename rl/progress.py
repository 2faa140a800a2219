"""Training progress: a rich live display on a TTY ("auto", "rich"), plain lines otherwise
("plain"), the final summary only ("quiet") or nothing ("none"); TensorBoard logging beside
any of them (``trpo train --tensorboard``: ``torch.utils.tensorboard``, needs tensorboard)."""

from __future__ import annotations

import contextlib
import importlib.util
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichBar
from rich.table import Table

__all__ = ["TENSORBOARD_HINT", "Clock", "PlainProgress", "Progress", "ProgressMode", "RichProgress",
           "TensorBoardProgress", "make_progress", "tensorboard_available"]  # fmt: skip

ProgressMode = Literal["auto", "rich", "plain", "quiet", "none"]

# (metrics key, label, short label for the 80-column table, format)
_FIELDS = (
    ("episode_return_mean", "return", "return", "{:.1f}"),
    ("episode_length_mean", "length", "length", "{:.0f}"),
    ("kl", "kl", "kl", "{:.4f}"),
    ("entropy", "entropy", "entropy", "{:.3f}"),
    ("value_loss", "value loss", "v loss", "{:.3g}"),
    ("explained_variance", "expl. var", "ev", "{:.2f}"),
    ("backtracks", "backtracks", "backtr", "{}"),
    ("accepted", "accepted", "accepted", "{}"),
    ("fps", "steps/s", "steps/s", "{:.0f}"),
)


def _format(value: Any, template: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return template.format(value)


def summary_line(summary: dict[str, Any]) -> str:
    """``key value`` pairs of the final summary on one line."""
    return "done: " + ", ".join(
        f"{key} {_format(value, '{:.2f}' if isinstance(value, float) else '{}')}"
        for key, value in summary.items()
    )


class Progress:
    """Interface: ``iteration(row)``, ``evaluation(row)``, ``finish(summary)``, ``abort()``;
    this base class prints nothing (mode ``"none"``)."""

    def __init__(self, total_steps: int, stream: TextIO | None = None) -> None:
        self.total_steps = total_steps
        self.stream = stream if stream is not None else sys.stdout

    def iteration(self, row: dict[str, Any]) -> None:
        """Called after each iteration with its metrics row."""

    def evaluation(self, row: dict[str, Any]) -> None:
        """Called after each evaluation with ``{step, mean_return, std_return, ...}``."""

    def finish(self, summary: dict[str, Any]) -> None:
        """Called once at the end of training."""

    def abort(self) -> None:
        """Called instead of ``finish`` when training stops on an exception."""


class QuietProgress(Progress):
    """Only the final summary."""

    def finish(self, summary: dict[str, Any]) -> None:
        print(summary_line(summary), file=self.stream, flush=True)


class PlainProgress(QuietProgress):
    """One plain line per iteration (no colour, no cursor movement)."""

    def iteration(self, row: dict[str, Any]) -> None:
        fields = " ".join(
            f"{label.replace(' ', '_')} {_format(row.get(key), template)}"
            for key, label, _, template in _FIELDS
        )
        line = f"iter {row['iteration']} step {row['step']}/{self.total_steps} {fields}"
        print(line, file=self.stream, flush=True)

    def evaluation(self, row: dict[str, Any]) -> None:
        line = f"eval step {row['step']} return {row['mean_return']:.1f} ± {row['std_return']:.1f}"
        print(line, file=self.stream, flush=True)


class RichProgress(Progress):
    """A live progress bar (steps, steps/s, ETA) above a table of the latest iteration."""

    def __init__(self, total_steps: int, stream: TextIO | None = None) -> None:
        super().__init__(total_steps, stream)
        self.console = Console(file=self.stream)
        self.bar = RichBar(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[fps]} steps/s"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(), console=self.console,
        )  # fmt: skip
        self.task = self.bar.add_task("training", total=total_steps, fps="-")
        self.last_eval: dict[str, Any] | None = None
        self.last_row: dict[str, Any] = {}
        table = Group(self.bar, self._table({}))
        self.live = Live(table, console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def _table(self, row: dict[str, Any]) -> Table:
        # Short headers, no edge padding: the whole row fits an 80-column terminal.
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("iter")
        for _, _, short, _ in _FIELDS[:-1]:
            table.add_column(short, justify="right")
        if row:
            cells = (_format(row.get(key), template) for key, _, _, template in _FIELDS[:-1])
            table.add_row(str(row["iteration"]), *cells)
        last = self.last_eval
        if last is not None:
            mean, std = last["mean_return"], last["std_return"]
            table.caption = f"eval at step {last['step']}: {mean:.1f} ± {std:.1f}"
        return table

    def iteration(self, row: dict[str, Any]) -> None:
        fps = _format(row.get("fps"), "{:.0f}")
        self.bar.update(self.task, completed=min(row["step"], self.total_steps), fps=fps)
        self.last_row = row
        self.live.update(Group(self.bar, self._table(row)))

    def evaluation(self, row: dict[str, Any]) -> None:
        self.last_eval = row
        self.live.update(Group(self.bar, self._table(self.last_row)))

    def abort(self) -> None:
        self.live.stop()

    def finish(self, summary: dict[str, Any]) -> None:
        self.live.stop()
        self.console.print(summary_line(summary), highlight=False, markup=False)


def make_progress(
    mode: ProgressMode = "auto", total_steps: int = 0, stream: TextIO | None = None
) -> Progress:
    """The display for ``mode``; ``"auto"`` is rich on a TTY and plain lines otherwise."""
    stream = stream if stream is not None else sys.stdout
    if mode == "auto":
        mode = "rich" if stream.isatty() else "plain"
    classes: dict[str, type[Progress]] = {
        "rich": RichProgress, "plain": PlainProgress, "quiet": QuietProgress, "none": Progress
    }  # fmt: skip
    if mode not in classes:
        raise ValueError(f"Invalid progress mode: {mode!r} (allowed: auto, {', '.join(classes)})")
    return classes[mode](total_steps, stream)


class Clock:
    """Wall time since the start of ``learn`` and env steps/s with evaluations kept out."""

    def __init__(self, start_step: int, time_offset: float = 0.0) -> None:
        self.start = time.perf_counter()
        self.start_step = start_step
        self.paused_seconds = 0.0
        self.time_offset = time_offset  # wall time of the run before this ``learn`` (resume)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        pause_start = time.perf_counter()
        try:
            yield
        finally:
            self.paused_seconds += time.perf_counter() - pause_start

    def rates(self, step: int) -> dict[str, float]:
        training_seconds = max(self.elapsed() - self.paused_seconds, 1e-9)
        return {"fps": (step - self.start_step) / training_seconds, "time": self.time()}

    def time(self) -> float:
        """Seconds of the run so far, the part before a resume included."""
        return self.time_offset + self.elapsed()


TENSORBOARD_HINT = "TensorBoard logging needs the tensorboard package: pip install tensorboard"
_NOT_LOGGED = {"step", "iteration"}


def tensorboard_available() -> bool:
    """Whether ``torch.utils.tensorboard`` can be imported (the tensorboard package is there)."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardProgress(Progress):
    """Forwards to ``inner`` and logs each row's numeric fields into ``log_dir``
    (ImportError naming the package without tensorboard)."""

    def __init__(self, inner: Progress, log_dir: str | Path) -> None:
        super().__init__(inner.total_steps, inner.stream)
        if not tensorboard_available():
            raise ImportError(TENSORBOARD_HINT, name="tensorboard")
        from torch.utils.tensorboard import SummaryWriter

        self.inner = inner
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def iteration(self, row: dict[str, Any]) -> None:
        self._log("train", row)
        self.inner.iteration(row)

    def evaluation(self, row: dict[str, Any]) -> None:
        self._log("eval", row)
        self.inner.evaluation(row)

    def finish(self, summary: dict[str, Any]) -> None:
        self.writer.close()
        self.inner.finish(summary)

    def abort(self) -> None:
        self.writer.close()
        self.inner.abort()

    def _log(self, prefix: str, row: dict[str, Any]) -> None:
        step = int(row["step"])
        for key, value in row.items():
            if key in _NOT_LOGGED or isinstance(value, str) or value is None:
                continue
            number = float(value)
            if math.isfinite(number):
                self.writer.add_scalar(f"{prefix}/{key}", number, global_step=step)
        self.writer.flush()
