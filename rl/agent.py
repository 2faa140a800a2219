"""``TRPOAgent``: the seed project's API, a thin facade over ``rl.TRPO``.

The seed README promised exactly this, and it works so::

    import gymnasium as gym
    from rl import TRPOAgent
    env = gym.make("Pendulum-v1")
    agent = TRPOAgent(env.observation_space.shape[0], env.action_space.shape[0], hidden_dim=64,
                      max_kl=0.01, gamma=0.99, lam=0.95, cg_iters=10, backtrack_iters=10,
                      damping=0.1)
    agent.train(env, num_epochs=50, steps_per_epoch=2000)

There is no second implementation here: ``train`` builds a ``TRPOConfig`` from the
constructor's arguments (one epoch = one TRPO iteration of ``steps_per_epoch`` steps, both
networks ``hidden_dim × hidden_dim``) and runs ``rl.TRPO`` on the env instance it is given,
through the env-factory path (``TRPO(config, env_fn=...)``) with a single env. The caller
keeps ownership of the env: the facade never closes it. For everything else (several envs,
presets, run directories, checkpoints) use ``rl.TRPO`` and ``rl.TRPOConfig`` directly; the
underlying agent is ``TRPOAgent.trpo``.
"""

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
    """TRPO with the seed project's constructor; see the module docstring.

    Args:
        state_dim (int): size of the (flattened) observation.
        action_dim (int): size of a Box action, or the number of actions with ``discrete``.
        hidden_dim (int, optional): width of the two hidden layers of the policy and the
            value networks (default: 64).
        max_kl (float, optional): trust-region radius, mean KL per update (default: 0.01).
        gamma (float, optional): discount γ (default: 0.99).
        lam (float, optional): GAE λ (default: 0.95).
        cg_iters (int, optional): conjugate-gradient iterations (default: 10).
        backtrack_iters (int, optional): line-search backtracking steps (default: 10).
        damping (float, optional): damping added to the Fisher matrix (default: 0.1).
        discrete (bool, optional): a categorical policy over ``Discrete(action_dim)`` instead
            of a Gaussian over ``Box((action_dim,))`` (default: False).
        seed (int, optional): seed of the networks, the action sampling and the env resets
            (default: 0).
        **config (optional): any other ``TRPOConfig`` field (e.g. ``value={"epochs": 5}``).

    Example:
        >>> env = gym.make("CartPole-v1")
        >>> agent = TRPOAgent(4, 2, discrete=True)
        >>> history = agent.train(env, num_epochs=2, steps_per_epoch=256)  # doctest: +SKIP
        >>> agent.act(env.reset(seed=0)[0])  # doctest: +SKIP
        1
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
            **config,
            "max_kl": max_kl,
            "gamma": gamma,
            "lam": lam,
            "cg_iters": cg_iters,
            "backtrack_iters": backtrack_iters,
            "damping": damping,
            "seed": seed,
            "num_envs": 1,
            "policy": {"hidden_sizes": layers, **config.get("policy", {})},
            "value": {"hidden_sizes": layers, **config.get("value", {})},
        }
        # validate now, so that a bad argument fails here rather than in train()
        TRPOConfig.from_dict({**self._settings, "steps_per_iteration": 1})
        self.trpo: TRPO | None = None
        self._env: gym.Env | None = None

    # ----------------------------------------------------------------------------- training
    def train(
        self,
        env: gym.Env,
        num_epochs: int = 50,
        steps_per_epoch: int = 2000,
        progress: ProgressMode = "none",
    ) -> list[dict[str, Any]]:
        """Train on ``env`` for ``num_epochs`` TRPO iterations of ``steps_per_epoch`` steps.

        A later call continues training the same networks (on the same or another env with
        the same spaces, with the same ``steps_per_epoch``).

        Args:
            env (gym.Env): a single gymnasium env; its spaces are checked against
                ``state_dim``/``action_dim``/``discrete``. It is reset with the agent's seed
                and is not closed.
            num_epochs (int, optional): TRPO iterations (default: 50).
            steps_per_epoch (int, optional): env steps per iteration (default: 2000).
            progress (str, optional): ``"none"``, ``"plain"``, ``"rich"``... (default: none).

        Returns:
            list[dict]: the metrics row of each epoch (as in metrics.jsonl: step, kl,
            episode_return_mean, ...).
        """
        self._check_spaces(env)
        if num_epochs < 1 or steps_per_epoch < 1:
            raise ValueError(
                f"Invalid num_epochs = {num_epochs}, steps_per_epoch = {steps_per_epoch} "
                "(both must be >= 1)"
            )
        self._env = env
        if self.trpo is None:
            config = TRPOConfig.from_dict(
                {**self._settings, "steps_per_iteration": steps_per_epoch}
            )
            self.trpo = TRPO(config, env_fn=self._lend_env)
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
        """The env factory handed to rl.TRPO: the caller's env instance, never closed."""
        if self._env is None:  # pragma: no cover - train sets it first
            raise RuntimeError("TRPOAgent: no env (call train(env, ...) first)")
        return _BorrowedEnv(self._env)

    def _check_spaces(self, env: gym.Env) -> None:
        """ValueError naming the mismatch between ``env``'s spaces and the constructor."""
        observation_dim = spaces.flatdim(env.observation_space)
        if observation_dim != self.state_dim:
            raise ValueError(
                f"state_dim = {self.state_dim} does not match the env's observation space "
                f"{env.observation_space} ({observation_dim} values when flattened)"
            )
        action_space = env.action_space
        if self.discrete:
            if not isinstance(action_space, spaces.Discrete) or action_space.n != self.action_dim:
                raise ValueError(
                    f"discrete=True with action_dim = {self.action_dim} needs a "
                    f"Discrete({self.action_dim}) action space; the env has {action_space}"
                )
        elif not (
            isinstance(action_space, spaces.Box) and action_space.shape == (self.action_dim,)
        ):
            hint = " (use discrete=True)" if isinstance(action_space, spaces.Discrete) else ""
            raise ValueError(
                f"action_dim = {self.action_dim} needs a Box action space of shape "
                f"({self.action_dim},); the env has {action_space}{hint}"
            )

    # ----------------------------------------------------------------------------- using it
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
        """The env action for one observation (the policy's mode unless ``deterministic``
        is False)."""
        return self._trained().predict(observation, deterministic=deterministic)

    def evaluate(
        self, env: gym.Env, episodes: int = 10, deterministic: bool = True, seed: int = 10_000
    ) -> dict[str, float]:
        """Play ``episodes`` whole episodes on ``env`` (reset with ``seed + k``).

        Returns:
            dict: ``mean_return``, ``std_return`` and ``mean_length``.
        """
        self._check_spaces(env)
        return play_episodes(env, lambda o: self.act(o, deterministic), episodes, seed)

    def save(self, path: str) -> None:
        """Save the trained networks and settings (``rl.TRPO.save``'s format)."""
        self._trained().save(path)

    @classmethod
    def load(cls, path: str, env: gym.Env) -> TRPOAgent:
        """An agent saved by :meth:`save`, ready to ``act``, ``evaluate`` or ``train`` on
        ``env`` (whose spaces must be those it was trained with; it is not closed).

        Example:
            >>> agent.save("pendulum.pt")  # doctest: +SKIP
            >>> agent = TRPOAgent.load("pendulum.pt", gym.make("Pendulum-v1"))  # doctest: +SKIP
        """
        agent = cls.__new__(cls)
        agent._env = env
        agent.trpo = TRPO.load(path, env_fn=agent._lend_env)
        config = agent.trpo.config
        agent.discrete = isinstance(agent.trpo.action_space, spaces.Discrete)
        agent.state_dim = spaces.flatdim(agent.trpo.observation_space)
        agent.action_dim = (
            int(agent.trpo.action_space.n)
            if agent.discrete
            else spaces.flatdim(agent.trpo.action_space)
        )
        agent._settings = config.model_dump(exclude={"steps_per_iteration"})
        agent._check_spaces(env)
        return agent
