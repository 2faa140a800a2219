"""What a checkpoint holds of an agent besides its envs: the RNG states (and, in
``TrainingState``, the networks, optimizers, counters and statistics)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rl.errors import first_line
from rl.replay import plain_data
from rl.run_files import CheckpointError
from rl.wrappers import FrozenObservationNormalizer

__all__ = ["MODEL_FORMAT", "InState", "TrainingState", "capture_rng_states",
           "cuda_rng_state_for", "restore_rng_states"]  # fmt: skip


def capture_rng_states(generators: Mapping[str, torch.Generator]) -> dict[str, Any]:
    """torch's, numpy's and Python's global generators and the named torch ``generators``."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": plain_data(np.random.get_state(legacy=False)),
        "python": plain_data(random.getstate()),
        "generators": {name: generator.get_state() for name, generator in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        index = _cuda_index(generators)
        state["cuda"] = {"device": index, "state": torch.cuda.get_rng_state(index)}
    return state


def restore_rng_states(state: Mapping[str, Any], generators: Mapping[str, torch.Generator]) -> None:
    """Set the generators captured by ``capture_rng_states``."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])
    if "cuda" in state and torch.cuda.is_available():
        index = _cuda_index(generators)
        saved = cuda_rng_state_for(state["cuda"], index)
        if saved is not None:
            torch.cuda.set_rng_state(saved, index)


def _cuda_index(generators: Mapping[str, torch.Generator]) -> int:
    """The GPU this process trains on: its CUDA generators' (else the current device)."""
    on_gpu = [g.device.index for g in generators.values() if g.device.type == "cuda"]
    return on_gpu[0] if on_gpu and on_gpu[0] is not None else torch.cuda.current_device()


def cuda_rng_state_for(saved: Any, index: int) -> torch.Tensor | None:
    """The saved CUDA RNG state for GPU ``index``: a checkpoint's one ``{"device", "state"}``
    (its process's GPU), or entry ``index`` of an older checkpoint's list of every GPU's
    (None if the saving machine had fewer GPUs: nothing is restored)."""
    if isinstance(saved, Mapping):
        return saved["state"]
    return saved[index] if index < len(saved) else None


MODEL_FORMAT = "rl.trpo.model/1"


@dataclass(eq=False, repr=False)
class TrainingState:
    """What learning changes in an agent (networks, optimizers, generators, counters, frozen
    statistics, last evaluation), which model files and checkpoints hold besides the envs;
    ``rl.TRPO`` keeps one as ``agent.state`` (docs/architecture.md)."""

    policy: nn.Module
    value: nn.Module
    policy_optimizer: torch.optim.Optimizer
    value_optimizer: torch.optim.Optimizer
    action_generator: torch.Generator
    shuffle_generator: torch.Generator
    step: int = 0
    iteration: int = 0
    obs_normalizer: FrozenObservationNormalizer | None = None
    reward_statistics: dict[str, float] | None = None
    last_evaluation: dict[str, Any] | None = None

    @property
    def generators(self) -> dict[str, torch.Generator]:
        return {"action": self.action_generator, "shuffle": self.shuffle_generator}

    def model_dict(self, config: dict[str, Any]) -> dict[str, Any]:
        """The model file's content (``config``: the run's, as plain data): plain tensors,
        numbers and strings only (loadable with ``weights_only=True``)."""
        normalizer = self.obs_normalizer
        return {
            "format": MODEL_FORMAT,
            "config": config,
            "step": self.step,
            "iteration": self.iteration,
            "policy": self.policy.state_dict(),
            "value": self.value.state_dict(),
            "obs_normalizer": None if normalizer is None else normalizer.state_dict(),
            "reward_statistics": self.reward_statistics,
        }

    def load_model_dict(
        self, model: Mapping[str, Any], where: str, env: str | None, observation_dim: int
    ) -> None:
        """Networks, counters and frozen statistics of a ``model_dict()``, checked to fit
        env ``env`` (``rl.run_files.CheckpointError`` saying ``where`` they come from)."""
        try:
            self.policy.load_state_dict(model["policy"])
            self.value.load_state_dict(model["value"])
        except RuntimeError as error:
            raise CheckpointError(
                f"the networks {where} do not fit env {env!r} and the networks built for it: "
                f"{first_line(error)}"
            ) from None
        self.step, self.iteration = int(model["step"]), int(model["iteration"])
        if model["obs_normalizer"] is not None:
            normalizer = FrozenObservationNormalizer.from_state_dict(model["obs_normalizer"])
            if normalizer.mean.shape != (observation_dim,):
                raise CheckpointError(
                    f"the observation statistics {where} have shape "
                    f"{tuple(normalizer.mean.shape)}, env {env!r} has {observation_dim}-"
                    "dimensional observations"
                )
            self.obs_normalizer = normalizer
        self.reward_statistics = model["reward_statistics"]

    def state_dict(self, config: dict[str, Any], rng: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint's part of this state: ``model``, both optimizers, ``rng`` (the RNG
        states, captured with the envs') and ``progress`` (step, iteration, last evaluation)."""
        return {
            "model": self.model_dict(config),
            "policy_optimizer": self.policy_optimizer.state_dict(),
            "value_optimizer": self.value_optimizer.state_dict(),
            "rng": rng,
            "progress": {
                "step": self.step,
                "iteration": self.iteration,
                "last_evaluation": self.last_evaluation,
            },
        }

    def load_state_dict(
        self, checkpoint: Mapping[str, Any], env: str | None, observation_dim: int
    ) -> None:
        """Load networks, optimizers, statistics, RNGs and counters of a checkpoint."""
        model = {**checkpoint["model"], **checkpoint["progress"]}
        self.load_model_dict(model, "of the checkpoint", env, observation_dim)
        self.policy_optimizer.load_state_dict(checkpoint["policy_optimizer"])
        self.value_optimizer.load_state_dict(checkpoint["value_optimizer"])
        self.last_evaluation = checkpoint["progress"]["last_evaluation"]
        restore_rng_states(checkpoint["rng"], self.generators)


class InState:
    """An attribute of an agent (``rl.TRPO``) that is its ``state``'s attribute of the same
    name: ``agent.step`` is ``agent.state.step``."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, agent: Any, owner: type | None = None) -> Any:
        return self if agent is None else getattr(agent.state, self.name)

    def __set__(self, agent: Any, value: Any) -> None:
        setattr(agent.state, self.name, value)
