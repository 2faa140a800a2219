"""``TRPOAgent``: the seed project's API (README), a thin facade over ``rl.TRPO`` that
trains on the env instance it is given (an epoch is an iteration)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from torch import nn

from rl.config import TRPOConfig
from rl.evaluation import play_episodes
from rl.progress import ProgressMode
from rl.trpo import TRPO

__all__ = ["TRPOAgent"]


class _BorrowedEnv(gym.Wrapper):
    """The caller's env, lent to rl: closing the vector env must not close it."""

    def close(self) -> None:
        """Leave the caller's env open."""


class TRPOAgent:
    """TRPO with the seed project's constructor. ``state_dim``: the flattened observation
    size; ``action_dim``: a Box action's size, or with ``discrete`` the number of actions
    of ``Discrete(action_dim)``; ``hidden_dim``: both networks' two hidden layers; the
    rest, and ``**config``, are ``TRPOConfig`` fields (``seed`` seeds networks, actions, env).
    """

    def __init__(
        self,
        state_dim: int,
        action_dim: int,
        hidden_dim: int = 64,
        max_kl: float = 0.01,
        gamma: float = 0.99,
        lam: float = 0.95,
        cg_iters: int = 10,
        backtrack_iters: int = 10,
        damping: float = 0.1,
        discrete: bool = False,
        seed: int = 0,
        **config: Any,
    ) -> None:
        for name, value in (("state_dim", state_dim), ("action_dim", action_dim)):
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"Invalid {name}: {value!r} (must be a positive integer)")
        self.state_dim, self.action_dim, self.discrete = int(state_dim), int(action_dim), discrete
        layers = (hidden_dim, hidden_dim)
        self._settings: dict[str, Any] = {
            **config, "max_kl": max_kl, "gamma": gamma, "lam": lam, "cg_iters": cg_iters,
            "backtrack_iters": backtrack_iters, "damping": damping, "seed": seed, "num_envs": 1,
            "policy": {"hidden_sizes": layers, **config.get("policy", {})},
            "value": {"hidden_sizes": layers, **config.get("value", {})},
        }  # fmt: skip
        # validate now, so that a bad argument fails here rather than in train()
        TRPOConfig.from_dict({**self._settings, "steps_per_iteration": 1})
        self.trpo: TRPO | None = None
        self._env: gym.Env | None = None

    def train(
        self,
        env: gym.Env,
        num_epochs: int = 50,
        steps_per_epoch: int = 2000,
        progress: ProgressMode = "none",
    ) -> list[dict[str, Any]]:
        """Train on ``env`` (spaces checked; never closed) for ``num_epochs`` iterations of
        ``steps_per_epoch`` steps; a later call continues. Returns each epoch's metrics row.
        """
        self._check_spaces(env)
        if num_epochs < 1 or steps_per_epoch < 1:
            raise ValueError(
                f"Invalid num_epochs = {num_epochs}, steps_per_epoch = {steps_per_epoch} "
                "(both must be >= 1)"
            )
        self._env = env
        if self.trpo is None:
            settings = {**self._settings, "steps_per_iteration": steps_per_epoch}
            self.trpo = TRPO(TRPOConfig.from_dict(settings), env_fn=self._lend_env)
        elif self.trpo.config.steps_per_iteration != steps_per_epoch:
            raise ValueError(
                f"Invalid steps_per_epoch: {steps_per_epoch} (this agent trains with "
                f"{self.trpo.config.steps_per_iteration} per epoch since its first train call)"
            )
        rows: list[dict[str, Any]] = []
        self.trpo.learn(
            total_steps=self.trpo.step + num_epochs * steps_per_epoch,
            progress=progress,
            callback=lambda _, row: rows.append(dict(row)) and None,
        )
        return rows

    def _lend_env(self) -> gym.Env:
        """The env factory handed to rl.TRPO (``train`` and ``load`` set ``_env`` first)."""
        return _BorrowedEnv(self._env)

    def _check_spaces(self, env: gym.Env) -> None:
        """ValueError naming the mismatch between ``env``'s spaces and the constructor."""
        observation_dim = spaces.flatdim(env.observation_space)
        if observation_dim != self.state_dim:
            raise ValueError(
                f"state_dim = {self.state_dim} does not match the env's observation space "
                f"{env.observation_space} ({observation_dim} values when flattened)"
            )
        space, n, hint = env.action_space, self.action_dim, ""
        if self.discrete:
            fits = isinstance(space, spaces.Discrete) and space.n == n
            needs = f"discrete=True with action_dim = {n} needs a Discrete({n}) action space"
        else:
            fits = isinstance(space, spaces.Box) and space.shape == (n,)
            needs = f"action_dim = {n} needs a Box action space of shape ({n},)"
            hint = " (use discrete=True)" if isinstance(space, spaces.Discrete) else ""
        if not fits:
            raise ValueError(f"{needs}; the env has {space}{hint}")

    def _trained(self) -> TRPO:
        if self.trpo is None:
            raise RuntimeError("TRPOAgent has not been trained yet: call train(env, ...) first")
        return self.trpo

    @property
    def policy(self) -> nn.Module:
        """The policy network (``rl.policies.Policy``); exists after the first ``train``."""
        return self._trained().policy

    @property
    def value(self) -> nn.Module:
        """The value network; exists after the first ``train``."""
        return self._trained().value

    def act(self, observation: Any, deterministic: bool = True) -> Any:
        """The env action for one observation (the mode if ``deterministic``)."""
        return self._trained().predict(observation, deterministic=deterministic)

    def evaluate(
        self, env: gym.Env, episodes: int = 10, deterministic: bool = True, seed: int = 10_000
    ) -> dict[str, float]:
        """``mean_return``, ``std_return``, ``mean_length`` of ``episodes`` on ``env``."""
        self._check_spaces(env)
        return play_episodes(env, lambda o: self.act(o, deterministic), episodes, seed)

    def save(self, path: str) -> None:
        """Save the trained networks and settings (``rl.TRPO.save``'s format)."""
        self._trained().save(path)

    @classmethod
    def load(cls, path: str, env: gym.Env) -> TRPOAgent:
        """An agent saved by ``save``, to use or train on ``env`` (the same spaces)."""
        agent = cls.__new__(cls)
        agent._env = env
        agent.trpo = TRPO.load(path, env_fn=agent._lend_env)
        agent.discrete = isinstance(agent.trpo.action_space, spaces.Discrete)
        agent.state_dim = spaces.flatdim(agent.trpo.observation_space)
        action_space = agent.trpo.action_space
        agent.action_dim = int(action_space.n) if agent.discrete else spaces.flatdim(action_space)
        agent._settings = agent.trpo.config.model_dump(exclude={"steps_per_iteration"})
        agent._check_spaces(env)
        return agent
