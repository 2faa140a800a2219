"""Optional TensorBoard logging beside metrics.jsonl (``trpo train --tensorboard``): each
numeric field of the rows (``train/<field>``) and evaluations (``eval/<field>``) at
``step``, through ``torch.utils.tensorboard`` (needs the tensorboard package)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

from rl.progress import Progress

__all__ = ["TENSORBOARD_HINT", "TensorBoardProgress", "tensorboard_available"]

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
