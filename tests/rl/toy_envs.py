"""Small gymnasium envs with known optima and known episode structure, for the rl tests."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CounterEnv(gym.Env):
    """Observation ``[episode_id, t]``: who and when, independent of the actions.

    Episode ``k`` lasts ``lengths[k % len(lengths)]`` steps and ends by termination when
    ``terminates[k % len]`` else by truncation. Reward at step ``t`` is ``t + 1``. Episode ids
    are unique across envs: ``1000 * env_index + k`` with ``env_index`` from the reset seed.
    """

    def __init__(
        self,
        lengths: tuple[int, ...] = (3, 5, 2, 4),
        terminates: tuple[bool, ...] = (True, False, False, True),
    ) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = spaces.Discrete(2)
        self.lengths, self.terminates = lengths, terminates
        self.env_index = 0
        self.episode = -1
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.array([1000 * self.env_index + self.episode, self.t], dtype=np.float64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.env_index = seed % 1000
            self.episode = -1
        self.episode += 1
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        k = self.episode % len(self.lengths)
        done = self.t >= self.lengths[k]
        terminated = done and self.terminates[k]
        truncated = done and not self.terminates[k]
        return self._obs(), float(self.t), terminated, truncated, {}


class ConstantRewardEnv(gym.Env):
    """Reward 1 forever from a constant observation: V = 1 / (1 − γ) (episodes cut by a
    TimeLimit are truncated, never terminated)."""

    observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        return np.ones(1, dtype=np.float32), {}

    def step(self, action):
        return np.ones(1, dtype=np.float32), 1.0, False, False, {}


class _TargetEnv(gym.Env):
    """Each step shows a random target; the reward scores the action against it. Episodes
    are ``horizon`` steps long (truncated)."""

    horizon = 8

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.t = 0
        self._new_target()
        return self._observation(), {}

    def step(self, action):
        reward = self._score(action)
        self.t += 1
        self._new_target()
        return self._observation(), float(reward), False, self.t >= self.horizon, {}


class BoxTargetEnv(_TargetEnv):
    """Box actions: reward ``−‖a − target‖²``; optimum 0 per step. Box observations."""

    observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = spaces.Box(-2.0, 2.0, (2,), np.float32)

    def _new_target(self) -> None:
        self.target = self.np_random.uniform(-1.0, 1.0, 2).astype(np.float32)

    def _observation(self):
        return self.target.copy()

    def _score(self, action) -> float:
        assert self.action_space.contains(action), action  # clipped before reaching the env
        return -float(np.sum((action - self.target) ** 2))


class DiscreteTargetEnv(_TargetEnv):
    """Discrete(3, start=1) actions: reward 1 for the shown arm; optimum 1 per step.
    Discrete observations (flattened to one-hot by rl)."""

    observation_space = spaces.Discrete(3)
    action_space = spaces.Discrete(3, start=1)

    def _new_target(self) -> None:
        self.target = int(self.np_random.integers(3))

    def _observation(self):
        return self.target

    def _score(self, action) -> float:
        assert self.action_space.contains(action), action
        return float(action == self.target + 1)


class MultiDiscreteTargetEnv(_TargetEnv):
    """MultiDiscrete([3, 4]) actions: reward = number of matched parts; optimum 2 per step.
    Dict observations."""

    observation_space = spaces.Dict({"first": spaces.Discrete(3), "second": spaces.Discrete(4)})
    action_space = spaces.MultiDiscrete([3, 4])

    def _new_target(self) -> None:
        self.target = (int(self.np_random.integers(3)), int(self.np_random.integers(4)))

    def _observation(self):
        return {"first": self.target[0], "second": self.target[1]}

    def _score(self, action) -> float:
        assert self.action_space.contains(action), action
        return float(action[0] == self.target[0]) + float(action[1] == self.target[1])


class MultiBinaryTargetEnv(_TargetEnv):
    """MultiBinary(4) actions: reward = number of matched bits; optimum 4 per step.
    Tuple observations."""

    observation_space = spaces.Tuple((spaces.MultiBinary(2), spaces.MultiBinary(2)))
    action_space = spaces.MultiBinary(4)

    def _new_target(self) -> None:
        self.target = self.np_random.integers(0, 2, 4).astype(np.int8)

    def _observation(self):
        return (self.target[:2].copy(), self.target[2:].copy())

    def _score(self, action) -> float:
        assert self.action_space.contains(action), action
        return float(np.sum(action == self.target))


class TextActionEnv(gym.Env):
    """An action space rl does not support."""

    observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = spaces.Text(5)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(1, dtype=np.float32), 0.0, True, False, {}


class TextObservationEnv(TextActionEnv):
    """An observation space rl does not support."""

    observation_space = spaces.Text(5)
    action_space = spaces.Discrete(2)
