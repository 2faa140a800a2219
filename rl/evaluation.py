"""Playing whole episodes to measure a policy: deterministic evaluations on a vector of
envs (``TRPO.evaluate``) and on one env (``TRPOAgent.evaluate``, ``record_video``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np

from rl.errors import EvaluationInterrupted

__all__ = ["EVAL_SEED_OFFSET", "episode_summary", "play_episodes", "play_vector_episodes"]

EVAL_SEED_OFFSET = 1_000_000  # evaluation envs are seeded apart from training envs


def episode_summary(returns: list[float], lengths: list[int]) -> dict[str, float]:
    """``mean_return``, ``std_return`` and ``mean_length`` of finished episodes."""
    return {
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "mean_length": float(np.mean(lengths)),
    }


def play_episodes(
    env: gym.Env, act: Callable[[Any], Any], episodes: int, seed: int
) -> dict[str, float]:
    """Play ``episodes`` whole episodes on ``env``, episode k reset with ``seed + k``,
    acting with ``act(observation)``; raw env returns (``episode_summary``)."""
    returns, lengths = [], []
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed + episode)
        total, length, done = 0.0, 0, False
        while not done:
            observation, reward, terminated, truncated, _ = env.step(act(observation))
            total, length, done = total + float(reward), length + 1, terminated or truncated
        returns.append(total)
        lengths.append(length)
    return episode_summary(returns, lengths)


def play_vector_episodes(
    envs: gym.vector.VectorEnv,
    act: Callable[[np.ndarray], np.ndarray],
    episodes: int,
    seed: int,
    step_cap: int,
    stop_signal: Callable[[], str | None] = lambda: None,
) -> dict[str, float]:
    """``episodes`` whole episodes on the sub-envs of ``envs``, one per sub-env per round
    (round r reset with ``seed + r·num_envs``), each cut after ``step_cap`` steps;
    EvaluationInterrupted if ``stop_signal()`` names a signal mid-episode."""
    num_envs = envs.num_envs
    returns: list[float] = []
    lengths: list[int] = []
    for first in range(0, episodes, num_envs):
        observations, _ = envs.reset(seed=seed + first)
        round_returns = np.zeros(num_envs)
        round_lengths = np.zeros(num_envs, dtype=np.int64)
        running = np.ones(num_envs, dtype=bool)
        for _ in range(step_cap):
            if not running.any():
                break
            if stop_signal():
                raise EvaluationInterrupted(stop_signal())
            actions = act(np.asarray(observations))
            observations, rewards, terminated, truncated, _ = envs.step(actions)
            round_returns += np.where(running, rewards, 0.0)
            round_lengths += running
            running &= ~(terminated | truncated)
        keep = min(num_envs, episodes - first)
        returns += round_returns[:keep].tolist()
        lengths += round_lengths[:keep].tolist()
    return episode_summary(returns, lengths)
