"""Envs that fail on purpose, for the reliability tests: NaN or infinite outputs, and
exceptions or deaths of the process stepping them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np


class _SeededIndex(gym.Wrapper):
    """Knows its sub-env index: rl seeds sub-env ``i`` with ``seed + i`` at the first reset
    (the tests use seed 0)."""

    def __init__(self, env_id: str) -> None:
        super().__init__(gym.make(env_id))
        self.env_index: int | None = None
        self.steps = 0  # env steps since the env was made

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None and self.env_index is None:
            self.env_index = seed
        return super().reset(seed=seed, options=options)


class NonFiniteEnv(_SeededIndex):
    """Sub-env ``env_index`` returns ``value`` as its ``quantity`` ("observation", "reward"
    or "reset") at its ``at_step``-th step (or at its first reset)."""

    def __init__(
        self,
        env_id: str = "Pendulum-v1",
        quantity: str = "observation",
        value: float = np.nan,
        at_step: int = 40,
        env_index: int = 1,
    ) -> None:
        super().__init__(env_id)
        self.quantity, self.value = quantity, value
        self.at_step, self.failing_index = at_step, env_index

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        observation, info = super().reset(seed=seed, options=options)
        if self.quantity == "reset" and self.env_index == self.failing_index:
            observation = np.full_like(observation, self.value, dtype=np.float64)
        return observation, info

    def step(self, action):
        observation, reward, terminated, truncated, info = super().step(action)
        self.steps += 1
        if self.steps == self.at_step and self.env_index == self.failing_index:
            if self.quantity == "observation":
                observation = np.array(observation, dtype=np.float64)
                observation[0] = self.value
            elif self.quantity == "reward":
                reward = self.value
        return observation, reward, terminated, truncated, info


class FailingOnceEnv(_SeededIndex):
    """Sub-env ``env_index`` fails at its ``at_step``-th step, once per ``marker`` file: it
    raises (``how="raise"``) or ends its process (``how="exit"``, ``os._exit(3)``). The
    marker is created first, so the env replayed on resume does not fail again."""

    def __init__(
        self, marker: str, how: str = "raise", at_step: int = 80, env_id: str = "CartPole-v1"
    ) -> None:
        super().__init__(env_id)
        self.marker, self.how, self.at_step = Path(marker), how, at_step

    def step(self, action):
        self.steps += 1
        if self.steps == self.at_step and self.env_index == 1 and not self.marker.exists():
            self.marker.touch()
            if self.how == "exit":
                os._exit(3)
            raise RuntimeError("simulated failure inside the env")
        return super().step(action)
