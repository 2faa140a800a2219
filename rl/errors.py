"""Faults that stop training from outside the algorithm (an env returning NaN, a dead env
worker, an unwritable run directory), raised before they reach the networks or the files:
``trpo train --resume RUN_DIR`` continues once the cause is fixed (``trpo`` exits 1)."""

from __future__ import annotations

__all__ = ["CheckpointWriteError", "EnvOutputError", "EnvWorkerError", "NonFiniteEnvError",
           "RunDirError", "RunDirLockedError", "TrainingError"]  # fmt: skip


class TrainingError(RuntimeError):
    """Training stopped on a fault outside the algorithm; nothing non-finite was learned
    and no file of the run was left half written."""


class NonFiniteEnvError(TrainingError):
    """Sub-env ``env_index`` returned a non-finite ``quantity`` ("observation" or "reward",
    after the float32 cast) ``value`` at ``vector_step`` of the rollout (-1: a reset; None:
    unknown)."""

    def __init__(
        self, quantity: str, env_index: int, vector_step: int | None, value: float, message=""
    ) -> None:
        self.quantity, self.env_index = quantity, env_index
        self.vector_step, self.value = vector_step, value
        super().__init__(
            message
            or f"sub-env {env_index} returned a non-finite {quantity} ({value}) {self._when()}"
        )

    def _when(self) -> str:
        if self.vector_step is None:
            return "on a step"
        if self.vector_step < 0:
            return "on reset"
        return f"at vector step {self.vector_step + 1} of its rollout"

    def at_vector_step(self, vector_step: int) -> NonFiniteEnvError:
        """The same error at ``vector_step`` of the rollout (unless it came on a reset)."""
        if self.vector_step is not None:
            return self
        return NonFiniteEnvError(self.quantity, self.env_index, vector_step, self.value)

    def located(self, env_name: str, step: int, iteration: int, num_envs: int) -> NonFiniteEnvError:
        """The same error naming the env, the step (``step``: before the rollout) and the
        iteration (from 1)."""
        at_step = step + (0 if self.vector_step is None else self.vector_step + 1) * num_envs
        message = (
            f"env {env_name!r} (sub-env {self.env_index}) returned a non-finite {self.quantity} "
            f"({self.value}) at step {at_step} (iteration {iteration}, {self._when()}); "
            "training stopped before it reached the networks: the parameters are unchanged "
            "and no checkpoint was written with it"
        )
        return NonFiniteEnvError(
            self.quantity, self.env_index, self.vector_step, self.value, message
        )


class EnvWorkerError(TrainingError):
    """An AsyncVectorEnv worker process raised an exception or died."""


class RunDirError(TrainingError):
    """The run directory cannot be written (read-only, permissions, disk full)."""


class CheckpointWriteError(TrainingError):
    """A checkpoint could not be written; the previous checkpoint is intact."""


class RunDirLockedError(RunDirError):
    """Another live process trains or resumes in the run directory."""


class EnvOutputError(TrainingError):
    """A sub-env returned an observation misfitting its space or a non-scalar reward."""


class EvaluationInterrupted(Exception):
    """A stop signal arrived during an evaluation inside ``learn``."""


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its type's name when it has none)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
