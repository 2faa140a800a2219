"""Gymnasium's vector statistics wrappers at a lower cost, the non-finite check, and the
frozen normalization statistics used outside training.

The Lean subclasses give gymnasium's numbers bit for bit (tested) with fewer numpy calls
(np.mean/np.var's ufuncs called directly; masking skipped when no sub-env is in a reset
slot) and keep the wrappers' attributes; their cost: docs/rollout_costs.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper
from gymnasium.wrappers.utils import RunningMeanStd
from gymnasium.wrappers.vector import NormalizeObservation, NormalizeReward, RecordEpisodeStatistics

from rl.errors import NonFiniteEnvError

__all__ = ["FrozenObservationNormalizer", "LeanNormalizeObservation", "LeanNormalizeReward",
           "LeanRecordEpisodeStatistics", "RefuseNonFinite", "raise_first_non_finite",
           "restore_reward_statistics", "reward_statistics",
           "update_running_moments"]  # fmt: skip


def update_running_moments(statistics: RunningMeanStd, batch: np.ndarray) -> None:
    """``statistics.update(batch)``, the same numbers: np.mean/np.var's ufuncs (numpy's
    ``_mean``/``_var`` for floating arrays) called directly; other dtypes go to ``update``."""
    if type(batch) is not np.ndarray or batch.dtype.kind != "f" or batch.ndim == 0:
        statistics.update(batch)
        return
    count = np.intp(batch.shape[0])  # numpy divides by an intp count
    mean = np.add.reduce(batch, axis=0, keepdims=True)
    np.true_divide(mean, count, out=mean, casting="unsafe")
    deviations = np.subtract(batch, mean)
    np.square(deviations, out=deviations)
    variance = np.add.reduce(deviations, axis=0)
    if type(variance) is np.ndarray:
        np.true_divide(variance, count, out=variance, casting="unsafe")
    else:  # a full reduction gives a numpy scalar, divided as numpy's _var divides it
        variance = variance.dtype.type(variance / count)
    batch_count = batch.shape[0]  # an int, as RunningMeanStd.update passes it
    if type(statistics) is not RunningMeanStd:
        statistics.update_from_moments(mean[0], variance, batch_count)
        return
    # gymnasium's update_mean_var_count_from_moments, operation for operation
    old_mean, old_var, old_count = statistics.mean, statistics.var, statistics.count
    delta = mean[0] - old_mean
    total = old_count + batch_count
    statistics.mean = old_mean + delta * batch_count / total
    squares = old_var * old_count + variance * batch_count
    statistics.var = (squares + np.square(delta) * old_count * batch_count / total) / total
    statistics.count = total


class LeanRecordEpisodeStatistics(RecordEpisodeStatistics):
    """gymnasium's vector RecordEpisodeStatistics (NEXT_STEP autoreset), the same
    statistics with fewer numpy calls on steps that follow no episode end."""

    def step(self, actions: Any):
        if self._autoreset_mode != AutoresetMode.NEXT_STEP or self.prev_dones.any():
            return super().step(actions)
        observations, rewards, terminations, truncations, infos = self.env.step(actions)
        # No sub-env is in a reset slot: every one adds its reward and a step.
        self.episode_returns += rewards
        self.episode_lengths += 1
        self.prev_dones = dones = np.logical_or(terminations, truncations)
        if dones.any():
            self._record_finished(dones, infos)
        return observations, rewards, terminations, truncations, infos

    def _record_finished(self, dones: np.ndarray, infos: dict[str, Any]) -> None:
        """What RecordEpisodeStatistics.step does when episodes end (NEXT_STEP mode)."""
        if self._stats_key in infos or f"_{self._stats_key}" in infos:
            raise ValueError(
                f"Attempted to add episode stats with key '{self._stats_key}' but this key "
                f"already exists in info: {list(infos.keys())}"
            )
        episode_time_length = np.round(time.perf_counter() - self.episode_start_times, 6)
        infos[self._stats_key] = {
            "r": np.where(dones, self.episode_returns, 0.0),
            "l": np.where(dones, self.episode_lengths, 0),
            "t": np.where(dones, episode_time_length, 0.0),
        }
        infos[f"_{self._stats_key}"] = dones
        self.episode_count += np.sum(dones)
        for i in np.where(dones):
            self.time_queue.extend(episode_time_length[i])
            self.return_queue.extend(self.episode_returns[i])
            self.length_queue.extend(self.episode_lengths[i])


class LeanNormalizeObservation(NormalizeObservation):
    """gymnasium's vector NormalizeObservation, the same numbers with fewer numpy calls."""

    def observations(self, observations: np.ndarray) -> np.ndarray:
        if self._update_running_mean:
            update_running_moments(self.obs_rms, observations)
        return (
            (observations - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.epsilon)
        ).astype(np.float32)


class LeanNormalizeReward(NormalizeReward):
    """gymnasium's vector NormalizeReward, the same numbers with fewer numpy calls."""

    def step(self, actions: Any):
        if self._autoreset_mode != AutoresetMode.NEXT_STEP:
            return super().step(actions)
        observations, rewards, terminated, truncated, infos = self.env.step(actions)
        accumulated = self.accumulated_reward
        if self._prev_dones.any():  # some sub-envs are in a reset slot: they stand still
            active = ~self._prev_dones.astype(bool)
            accumulated[active] = (
                accumulated[active] * self.gamma * (1 - terminated[active]) + rewards[active]
            )
            if self._update_running_mean and active.any():
                update_running_moments(self.return_rms, accumulated[active])
        else:
            accumulated[...] = accumulated * self.gamma * (1 - terminated) + rewards
            if self._update_running_mean:
                update_running_moments(self.return_rms, accumulated)
        self._prev_dones = np.logical_or(terminated, truncated).astype(np.float32)
        scaled = rewards / np.sqrt(self.return_rms.var + self.epsilon)
        return observations, scaled, terminated, truncated, infos


class RefuseNonFinite(VectorWrapper):
    """Raises ``NonFiniteEnvError`` naming the sub-env that returns a NaN or infinite
    observation or reward, before the statistics average it in. The screen is one dot
    product with ones (cheaper than ``np.isfinite(x).all()``); the exact search runs only
    when it fires. Integer observations are not screened; ``rl.rollout`` sets the step."""

    def __init__(self, env: VectorEnv) -> None:
        super().__init__(env)
        self._ones: dict[tuple[int, ...], np.ndarray | None] = {}  # by shape; None: ints

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        observations, infos = self.env.reset(seed=seed, options=options)
        self._check("observation", observations, on_reset=True)
        return observations, infos

    def step(self, actions: Any):
        observations, rewards, terminated, truncated, infos = self.env.step(actions)
        self._check("observation", observations)
        self._check("reward", rewards)
        return observations, rewards, terminated, truncated, infos

    def _check(self, quantity: str, values: Any, on_reset: bool = False) -> None:
        if type(values) is not np.ndarray:
            return
        ones = self._ones.get(values.shape, False)
        if ones is False:  # first array of this shape (the spaces fix shapes and dtypes)
            floating = values.dtype.kind == "f"
            ones = self._ones[values.shape] = (
                np.ones(values.size, values.dtype) if floating else None
            )
        if ones is None:
            return
        try:
            screen = (values.reshape(-1) if values.ndim > 1 else values).dot(ones)
        except RuntimeWarning:  # inf - inf or an overflow, under ``-W error``
            screen = math.nan
        if not math.isfinite(screen):
            raise_first_non_finite(quantity, values.reshape(self.num_envs, -1), on_reset)


def raise_first_non_finite(
    quantity: str, values: np.ndarray, on_reset: bool = False, vector_step: int | None = None
) -> None:
    """Raise ``NonFiniteEnvError`` for the first sub-env (row of ``values``, ``(N, k)``)
    holding a NaN or infinite value; return if there is none."""
    bad = ~np.isfinite(values)
    if bad.any():
        env_index = int(bad.any(axis=1).argmax())
        value = float(values[env_index][bad[env_index]][0])
        step = -1 if on_reset else vector_step
        raise NonFiniteEnvError(quantity, env_index, step, value)


@dataclass(frozen=True)
class FrozenObservationNormalizer:
    """A snapshot of NormalizeObservation's statistics, applied with its exact formula."""

    mean: np.ndarray
    var: np.ndarray
    count: float
    epsilon: float

    @classmethod
    def from_wrapper(cls, wrapper: NormalizeObservation) -> FrozenObservationNormalizer:
        rms = wrapper.obs_rms
        return cls(np.array(rms.mean), np.array(rms.var), float(rms.count), wrapper.epsilon)

    def restore_into(self, wrapper: NormalizeObservation) -> None:
        """Make ``wrapper`` continue from these statistics."""
        wrapper.obs_rms.mean = np.array(self.mean)
        wrapper.obs_rms.var = np.array(self.var)
        wrapper.obs_rms.count = self.count

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        return ((observations - self.mean) / np.sqrt(self.var + self.epsilon)).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {
            "mean": torch.from_numpy(np.array(self.mean)),
            "var": torch.from_numpy(np.array(self.var)),
            "count": self.count,
            "epsilon": float(self.epsilon),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> FrozenObservationNormalizer:
        count, epsilon = float(state["count"]), float(state["epsilon"])
        return cls(state["mean"].numpy(), state["var"].numpy(), count, epsilon)


def reward_statistics(wrapper: NormalizeReward) -> dict[str, Any]:
    """NormalizeReward's running statistics of the discounted return, as plain values."""
    rms = wrapper.return_rms
    return {"mean": float(rms.mean), "var": float(rms.var), "count": float(rms.count)}


def restore_reward_statistics(wrapper: NormalizeReward, state: dict[str, Any]) -> None:
    """Make ``wrapper`` continue from statistics saved by ``reward_statistics``."""
    rms = wrapper.return_rms
    rms.mean, rms.var = np.float64(state["mean"]), np.float64(state["var"])
    rms.count = float(state["count"])
