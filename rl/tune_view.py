"""What ``trpo tune`` shows: trials done, pruned, failed and running, the best value and its
parameters. A rich live view on a TTY, a plain line per trial event otherwise, or only the
final summary (``--quiet``); as ``rl.progress`` does for ``trpo train``."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any, TextIO

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from rl.tune_study import best_trial

__all__ = ["TuneView", "describe_values"]


def describe_values(values: dict[str, Any]) -> str:
    """``name=value`` pairs, floats to 4 significant digits."""
    return " ".join(f"{k}={f'{v:.4g}' if isinstance(v, float) else v}" for k, v in values.items())


def _last_report(trial: FrozenTrial) -> str:
    if not trial.intermediate_values:
        return "-"
    step = max(trial.intermediate_values)
    return f"{trial.intermediate_values[step]:.1f} at step {step}"


class TuneView:
    """``update(trials)`` after each look at the study, ``finish(line)`` once.

    Args:
        mode (str): ``"auto"`` (rich on a TTY, else plain), ``"rich"``, ``"plain"`` or
            ``"quiet"``.
        total (int): the study's number of trials.
    """

    def __init__(self, mode: str, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.mode = ("rich" if self.stream.isatty() else "plain") if mode == "auto" else mode
        self.total, self.start = total, time.monotonic()
        self.states: dict[int, TrialState] = {}
        self.live: Live | None = None
        if self.mode == "rich":
            console = Console(file=self.stream)
            self.live = Live(Text("starting trials"), console=console, refresh_per_second=2)
            self.live.start()

    def update(self, trials: list[FrozenTrial]) -> None:
        best = best_trial(trials)
        if self.mode == "plain":
            for trial in trials:
                if self.states.get(trial.number) != trial.state:
                    self._print(self._event(trial, best))
        self.states = {trial.number: trial.state for trial in trials}
        if self.live is not None:
            self.live.update(self._table(trials, best))

    def finish(self, line: str) -> None:
        if self.live is not None:
            self.live.stop()
        self._print(line)

    def _print(self, line: str | None) -> None:
        if line is not None:
            print(line, file=self.stream, flush=True)

    def _event(self, trial: FrozenTrial, best: FrozenTrial | None) -> str | None:
        head = f"trial {trial.number}"
        if trial.user_attrs.get("base_config"):
            head += " (the base config)"
        if trial.state == TrialState.RUNNING:
            return f"{head} running: {describe_values(trial.user_attrs.get('values', {}))}"
        if trial.state == TrialState.PRUNED:
            return f"{head} pruned: {_last_report(trial)}"
        if trial.state == TrialState.FAIL:
            return f"{head} failed: {trial.user_attrs.get('error', 'its process died')}"
        if trial.state == TrialState.COMPLETE and best is not None:
            return (
                f"{head} complete: {trial.value:.2f} (best {best.value:.2f}, trial {best.number})"
            )
        return None

    def _table(self, trials: list[FrozenTrial], best: FrozenTrial | None) -> Group:
        counts = Counter(trial.state for trial in trials)
        minutes = (time.monotonic() - self.start) / 60
        head = Text(
            f"trials {len(trials)}/{self.total}: {counts[TrialState.COMPLETE]} complete, "
            f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed, "
            f"{counts[TrialState.RUNNING]} running ({minutes:.1f} min)"
        )
        lines: list[Any] = [head]
        if best is not None:
            lines.append(Text(f"best {best.value:.2f} (trial {best.number}): "
                              f"{describe_values(best.user_attrs['values'])}"))  # fmt: skip
        table = Table("trial", "last evaluation", "parameters", box=None, pad_edge=False)
        for trial in trials:
            if trial.state == TrialState.RUNNING:
                values = describe_values(trial.user_attrs.get("values", {}))
                table.add_row(str(trial.number), _last_report(trial), values)
        return Group(*lines, *([table] if table.rows else []))
