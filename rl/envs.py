"""Vector environments: creation, observation flattening, normalization and episode statistics.

Every vector env here runs gymnasium's ``AutoresetMode.NEXT_STEP`` explicitly: the step that
ends an episode returns that episode's final observation (normalized like every other
observation), and the *next* step of that sub-env is a reset step whose action is ignored.
The rollout masks those reset steps (see ``rl.rollout``). We keep NEXT_STEP because
gymnasium 1.4's vector NormalizeObservation refuses SAME_STEP, and because it puts the
final observation in the observation stream, where it is normalized with the same
statistics as its neighbours instead of arriving raw in ``info``.

Wrapper stack, innermost first::

    gym.make(env_id) [FlattenObservation]   per sub-env, for Dict/Tuple/Discrete/n-d Box
    Sync/AsyncVectorEnv(autoreset_mode=NEXT_STEP)   sync: LeanSyncVectorEnv (no step infos)
    RefuseNonFinite                         NaN/inf observations or rewards: a clear error
    RecordEpisodeStatistics                 raw returns and lengths of finished episodes
    NormalizeObservation                    optional, running mean/var (shared over envs)
    NormalizeReward                         optional, scales by the discounted-return std

(the three statistics wrappers are gymnasium's, subclassed as ``Lean*`` to cost fewer
numpy calls per step: the same numbers, see ``update_running_moments``).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv, VectorWrapper
from gymnasium.vector.async_vector_env import AsyncState
from gymnasium.vector.utils import concatenate, iterate
from gymnasium.wrappers import FlattenObservation
from gymnasium.wrappers.utils import RunningMeanStd
from gymnasium.wrappers.vector import NormalizeObservation, NormalizeReward, RecordEpisodeStatistics

from rl.atari import AtariConfig, make_gym_env
from rl.errors import EnvOutputError, NonFiniteEnvError

__all__ = [
    "EnvFactory",
    "FrozenObservationNormalizer",
    "LeanNormalizeObservation",
    "LeanNormalizeReward",
    "LeanRecordEpisodeStatistics",
    "LeanSyncVectorEnv",
    "RefuseNonFinite",
    "VectorEnvs",
    "check_observation_space",
    "flatten_observations",
    "make_env_factory",
    "make_vector_envs",
    "raise_first_non_finite",
    "raw_observation_space",
    "restore_reward_statistics",
    "reward_statistics",
    "update_running_moments",
]

EnvFactory = Callable[[], gym.Env]

_FLAT_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def check_observation_space(space: spaces.Space) -> None:
    """Raise a ValueError naming ``space`` unless it flattens to a Box."""
    if isinstance(space, _FLAT_SPACES):
        return
    if isinstance(space, spaces.Dict | spaces.Tuple):
        for sub_space in space.spaces.values() if isinstance(space, spaces.Dict) else space:
            check_observation_space(sub_space)
        return
    raise ValueError(
        f"Unsupported observation space {space} ({type(space).__name__}): rl supports Box, "
        "Discrete, MultiDiscrete, MultiBinary, Dict and Tuple observations"
    )


def _needs_flattening(space: spaces.Space) -> bool:
    return not (isinstance(space, spaces.Box) and len(space.shape) == 1)


def make_env_factory(
    env_id: str | None,
    env_kwargs: dict[str, Any] | None = None,
    env_fn: EnvFactory | None = None,
    atari: AtariConfig | None = None,
) -> EnvFactory:
    """A picklable-by-cloudpickle callable making one env with flat observations.

    ALE (Atari) ids get gymnasium's Atari preprocessing configured by ``atari`` (see
    ``rl.atari``); ``env_fn`` envs are used as they come.
    """
    if env_fn is None and env_id is None:
        raise ValueError("env_id is required unless an env factory (env_fn) is given")

    def make() -> gym.Env:
        with quiet_mujoco_deprecations():
            env = env_fn() if env_fn is not None else make_gym_env(env_id, env_kwargs, atari)
        check_observation_space(env.observation_space)
        return _FlatObservations(env) if _needs_flattening(env.observation_space) else env

    return make


class _FlatObservations(FlattenObservation):
    """gymnasium's FlattenObservation, marked as the one rl added (see raw_observation_space)."""


def flatten_observations(space: spaces.Space, observation: Any) -> tuple[np.ndarray, bool]:
    """``(B, flat_dim)`` rows of one observation of ``space`` (B = 1) or of a batch (every
    array with a leading B), and whether it was one observation.

    Raises:
        ValueError: the observation's shape is neither ``space``'s nor a batch of it.
    """
    leaf_space, leaf = _first_leaf(space, observation)
    shape = np.shape(leaf)
    expected = () if leaf_space.shape is None else tuple(leaf_space.shape)
    if shape == expected:
        return spaces.flatten(space, observation)[None], True
    if len(shape) != len(expected) + 1 or shape[1:] != expected:
        raise ValueError(
            f"observation of shape {shape} fits neither the observation space {space} "
            f"(one observation, shape {expected}) nor a batch of it (shape (B, *{expected}))"
        )
    if isinstance(space, spaces.Box):
        return np.asarray(observation).reshape(shape[0], -1), False
    batched = gym.vector.utils.batch_space(space, shape[0])
    items = gym.vector.utils.iterate(batched, observation)
    return np.stack([spaces.flatten(space, item) for item in items]), False


def _first_leaf(space: spaces.Space, observation: Any) -> tuple[spaces.Space, Any]:
    """The first non-container subspace of ``space`` and the matching part of ``observation``."""
    if isinstance(space, spaces.Dict):
        key = next(iter(space.spaces))
        return _first_leaf(space.spaces[key], observation[key])
    if isinstance(space, spaces.Tuple):
        return _first_leaf(space.spaces[0], observation[0])
    return space, observation


def raw_observation_space(env: gym.Env) -> spaces.Space:
    """The observation space of an env made by ``make_env_factory``, before rl flattened it."""
    return (
        env.env.observation_space if isinstance(env, _FlatObservations) else env.observation_space
    )


@contextlib.contextmanager
def quiet_mujoco_deprecations() -> Iterator[None]:
    """Silence MuJoCo's 'settotalmass' deprecation, printed for each HalfCheetah created.

    MuJoCo reports it through ``mju_warning`` (C, to stderr), not Python warnings, so we
    install a user warning handler that drops that message and forwards all others.
    """
    if importlib.util.find_spec("mujoco") is None:
        yield
        return
    import mujoco

    previous = mujoco.get_mju_user_warning()

    def handler(message: str) -> None:
        if "settotalmass" in message:
            return
        if previous is not None:
            previous(message)
        else:
            import sys

            print(f"WARNING: {message}", file=sys.stderr)

    mujoco.set_mju_user_warning(handler)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


@dataclass
class VectorEnvs:
    """A vector env and handles on the wrappers whose state the agent reads or saves.

    Attributes:
        env (VectorEnv): the outermost wrapper; ``step``/``reset`` go through it.
        episode_stats (RecordEpisodeStatistics): raw returns/lengths of finished episodes.
        obs_normalizer (NormalizeObservation | None): running observation statistics.
        reward_normalizer (NormalizeReward | None): running discounted-return statistics.
    """

    env: VectorEnv
    episode_stats: RecordEpisodeStatistics
    obs_normalizer: NormalizeObservation | None
    reward_normalizer: NormalizeReward | None

    @property
    def num_envs(self) -> int:
        return self.env.num_envs

    @property
    def observation_dim(self) -> int:
        return int(np.prod(self.env.single_observation_space.shape))

    @property
    def action_space(self) -> spaces.Space:
        return self.env.single_action_space

    def close(self) -> None:
        """Close the envs. After a failed step of an AsyncVectorEnv (a worker raised or
        died) the remaining workers are killed, not waited on: gymnasium's close would wait
        for step results that never come."""
        vector_env = self.env.unwrapped
        if isinstance(vector_env, AsyncVectorEnv) and _failed(vector_env):
            _kill_workers(vector_env)
            return
        try:
            self.env.close()
        except (EOFError, OSError):
            _kill_workers(vector_env)

    def worker_failure(self) -> str | None:
        """For AsyncVectorEnv: which worker raised or died and how, after a failed step;
        None if every worker is alive (or the envs are synchronous)."""
        vector_env = self.env.unwrapped
        if not isinstance(vector_env, AsyncVectorEnv):
            return None
        deadline = time.monotonic() + WORKER_EXIT_WAIT
        while True:
            for index, process in enumerate(vector_env.processes):
                if process.exitcode is not None and vector_env.parent_pipes[index] is not None:
                    return f"env worker {index} died ({_exit_status(process.exitcode)})"
            for index, pipe in enumerate(vector_env.parent_pipes):
                if pipe is None:  # gymnasium closes the pipe of a worker that raised
                    return f"env worker {index} raised"
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)


WORKER_EXIT_WAIT = 2.0  # seconds for a worker whose pipe broke to be seen as exited


def _exit_status(exitcode: int) -> str:
    if exitcode < 0:
        return f"killed by {signal.Signals(-exitcode).name}"
    return f"exit code {exitcode}"


def _failed(vector_env: AsyncVectorEnv) -> bool:
    """A call left pending, a worker whose pipe gymnasium closed after it raised, or a dead
    worker."""
    return (
        vector_env._state != AsyncState.DEFAULT
        or any(pipe is None for pipe in vector_env.parent_pipes)
        or any(process.exitcode is not None for process in vector_env.processes)
    )


def _kill_workers(vector_env: VectorEnv) -> None:
    """Close an AsyncVectorEnv after a failure: SIGKILL its live workers (they ignore
    SIGINT and SIGTERM while training, see ``rl.checkpoint.RecordingFactory``), then let
    gymnasium close the pipes and join the processes without waiting on them."""
    if not isinstance(vector_env, AsyncVectorEnv) or vector_env.closed:
        return
    for process in vector_env.processes:
        if process.is_alive():
            process.kill()
    vector_env._state = AsyncState.DEFAULT  # the failed call will not be waited for
    vector_env.close(terminate=True)


def make_vector_envs(
    factory: EnvFactory,
    num_envs: int,
    vector_mode: str = "sync",
    normalize_observations: bool = False,
    normalize_rewards: bool = False,
    gamma: float = 0.99,
    episode_window: int = 100,
) -> VectorEnvs:
    """Build the wrapper stack described in the module docstring.

    Args:
        factory (callable): makes one sub-env (see ``make_env_factory``).
        num_envs (int): number of sub-envs.
        vector_mode (str): ``"sync"`` or ``"async"`` (one process per sub-env).
        normalize_observations (bool): add gymnasium's NormalizeObservation.
        normalize_rewards (bool): add gymnasium's NormalizeReward with discount ``gamma``.
        gamma (float): discount of NormalizeReward's return estimate.
        episode_window (int): finished episodes kept by RecordEpisodeStatistics.
    """
    vector_class = {"sync": LeanSyncVectorEnv, "async": AsyncVectorEnv}[vector_mode]
    env: VectorEnv = vector_class([factory] * num_envs, autoreset_mode=AutoresetMode.NEXT_STEP)
    env = RefuseNonFinite(env)
    env = episode_stats = LeanRecordEpisodeStatistics(env, buffer_length=episode_window)
    obs_normalizer = reward_normalizer = None
    if normalize_observations:
        env = obs_normalizer = LeanNormalizeObservation(env)
    if normalize_rewards:
        env = reward_normalizer = LeanNormalizeReward(env, gamma=gamma)
    return VectorEnvs(env, episode_stats, obs_normalizer, reward_normalizer)


class LeanSyncVectorEnv(SyncVectorEnv):
    """gymnasium's SyncVectorEnv under NEXT_STEP autoreset without gathering the sub-envs'
    step infos, which rl never reads: merging them costs about 18 µs per HalfCheetah
    vector step of 2 envs (105 µs with, 87 µs without). Observations, rewards,
    terminations and truncations are SyncVectorEnv's, bit for bit (tested); ``reset`` and
    every other method are SyncVectorEnv's own. The step's info dict starts empty (the
    statistics wrapper adds its ``episode`` entry)."""

    def step(self, actions: Any):
        if self.autoreset_mode != AutoresetMode.NEXT_STEP:
            return super().step(actions)
        observations, rewards = self._env_obs, self._rewards
        terminations, truncations, resetting = (
            self._terminations,
            self._truncations,
            self._autoreset_envs,
        )
        for i, (action, env) in enumerate(
            zip(iterate(self.action_space, actions), self.envs, strict=True)
        ):
            if resetting[i]:
                observations[i], _ = env.reset()
                rewards[i] = 0.0
                terminations[i] = False
                truncations[i] = False
            else:
                step = env.step(action)
                observations[i] = step[0]
                try:
                    rewards[i] = step[1]
                except (TypeError, ValueError):
                    raise EnvOutputError(
                        f"sub-env {i} returned a reward of shape {np.shape(step[1])} "
                        f"({type(step[1]).__name__}): a reward must be one number"
                    ) from None
                terminations[i], truncations[i] = step[2], step[3]
        try:
            self._observations = concatenate(
                self.single_observation_space, observations, self._observations
            )
        except (TypeError, ValueError):
            raise self._misfit(observations) from None
        self._autoreset_envs = np.logical_or(terminations, truncations)
        batch = self._observations
        if self.copy:
            batch = np.copy(batch) if type(batch) is np.ndarray else copy.deepcopy(batch)
        return batch, np.copy(rewards), np.copy(terminations), np.copy(truncations), {}

    def _misfit(self, observations: list[Any]) -> Exception:
        """The EnvOutputError naming the first sub-env whose observation misfits its space."""
        space = self.single_observation_space
        for i, observation in enumerate(observations):
            if isinstance(space, spaces.Box) and np.shape(observation) != space.shape:
                return EnvOutputError(
                    f"sub-env {i} returned an observation of shape {np.shape(observation)}; "
                    f"its observation space is {space} (shape {space.shape})"
                )
        return EnvOutputError(f"an observation does not fit the observation space {space}")


# --------------------------------------------------------------- the statistics wrappers
# gymnasium's vector RecordEpisodeStatistics, NormalizeObservation and NormalizeReward
# cost about 80 µs per vector step of 2 envs (a HalfCheetah-v5 step of both is about 100
# µs): np.mean and np.var on a (2, 17) batch are Python functions around a few ufuncs,
# and the masked updates index arrays several times per step. The Lean subclasses give
# the same numbers (bit for bit, tested against gymnasium's) with fewer numpy calls: the
# ufuncs that np.mean/np.var run, called directly, and the masking skipped on the steps
# (almost all of them) where no sub-env is in a NEXT_STEP reset slot. They keep the
# wrappers' attributes (obs_rms, return_rms, accumulated_reward, the episode queues), so
# checkpoints and the rest of rl read and restore them as before.


def update_running_moments(statistics: RunningMeanStd, batch: np.ndarray) -> None:
    """``statistics.update(batch)`` (gymnasium's RunningMeanStd), the same numbers.

    ``np.mean(batch, axis=0)`` and ``np.var(batch, axis=0)`` are the ufunc calls below
    (numpy's ``_mean``/``_var`` for floating arrays); other dtypes go through ``update``.
    """
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
    """gymnasium's vector NormalizeReward (NEXT_STEP autoreset), the same numbers with fewer
    numpy calls."""

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
    """Raises ``rl.errors.NonFiniteEnvError`` naming the sub-env when one returns a NaN or
    infinite observation or reward, before the statistics wrappers above it average it in.

    The screen is the sum of each array as one dot product with ones, about 1 µs (NaN or
    ±inf for any NaN or ±inf; ``np.isfinite(x).all()`` costs about 2.5 µs); the exact search
    runs only when it fires, so a sum that overflows (values near the dtype's maximum) costs
    that search but raises nothing. Integer observations are not screened.
    The error's ``vector_step`` is None here; ``rl.rollout`` fills it in.
    """

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
    """A snapshot of NormalizeObservation's statistics, applied with the wrapper's formula.

    ``(obs − mean) / sqrt(var + epsilon)`` in the statistics' dtype, cast to float32, exactly
    as ``gymnasium.wrappers.vector.NormalizeObservation.observations`` computes it.
    """

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
        return cls(
            state["mean"].numpy(),
            state["var"].numpy(),
            float(state["count"]),
            float(state["epsilon"]),
        )


def reward_statistics(wrapper: NormalizeReward) -> dict[str, Any]:
    """NormalizeReward's running statistics of the discounted return, as plain values."""
    rms = wrapper.return_rms
    return {"mean": float(rms.mean), "var": float(rms.var), "count": float(rms.count)}


def restore_reward_statistics(wrapper: NormalizeReward, state: dict[str, Any]) -> None:
    """Make ``wrapper`` continue from statistics saved by ``reward_statistics``."""
    rms = wrapper.return_rms
    rms.mean, rms.var, rms.count = (
        np.float64(state["mean"]),
        np.float64(state["var"]),
        float(state["count"]),
    )
