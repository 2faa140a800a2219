"""Vector environments: creation, observation flattening, normalization, episode statistics.

Autoreset is gymnasium's NEXT_STEP: the step ending an episode returns its final observation
(normalized like the others), the sub-env's next step is a reset whose action is ignored
(the rollout masks it). Wrapper stack, innermost first::

    gym.make(env_id) [FlattenObservation]   per sub-env, for Dict/Tuple/Discrete/n-d Box
    Sync/AsyncVectorEnv(autoreset_mode=NEXT_STEP)   sync: LeanSyncVectorEnv (no step infos)
    RefuseNonFinite                         NaN/inf observations or rewards: a clear error
    RecordEpisodeStatistics                 raw returns and lengths of finished episodes
    NormalizeObservation                    optional, running mean/var (shared over envs)
    NormalizeReward                         optional, scales by the discounted-return std


(the statistics wrappers are gymnasium's, subclassed as ``Lean*``: the same numbers, faster).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv, VectorEnv
from gymnasium.vector.async_vector_env import AsyncState
from gymnasium.vector.utils import concatenate, iterate
from gymnasium.wrappers import FlattenObservation
from gymnasium.wrappers.vector import NormalizeObservation, NormalizeReward, RecordEpisodeStatistics

from rl.atari import AtariConfig, make_gym_env
from rl.errors import EnvOutputError
from rl.wrappers import (
    LeanNormalizeObservation,
    LeanNormalizeReward,
    LeanRecordEpisodeStatistics,
    RefuseNonFinite,
)

__all__ = ["EnvFactory", "LeanSyncVectorEnv", "VectorEnvs", "check_observation_space",
           "flatten_observations", "make_env_factory", "make_vector_envs",
           "raw_observation_space"]  # fmt: skip

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
    """A (cloudpickle-able) callable making one env with flat observations; ALE ids get
    the Atari preprocessing of ``atari``, ``env_fn`` envs are used as they come."""
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
    """``(B, flat_dim)`` rows of one observation of ``space`` (B = 1) or of a batch (leading
    B), and whether it was one; ValueError if it is neither."""
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
    """Drop MuJoCo's 'settotalmass' deprecation (a C ``mju_warning`` per HalfCheetah made)."""
    if importlib.util.find_spec("mujoco") is None:
        yield
        return
    import mujoco

    previous = mujoco.get_mju_user_warning()

    def handler(message: str) -> None:
        if "settotalmass" not in message:
            (previous or (lambda text: print(f"WARNING: {text}", file=sys.stderr)))(message)

    mujoco.set_mju_user_warning(handler)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


@dataclass
class VectorEnvs:
    """A vector env (``env``, the outermost wrapper) and handles on the wrappers whose
    state the agent reads or saves."""

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
        """Close the envs (after a failed async step, kill the workers: not wait on them)."""
        vector_env = self.env.unwrapped
        if isinstance(vector_env, AsyncVectorEnv) and _failed(vector_env):
            _kill_workers(vector_env)
            return
        try:
            self.env.close()
        except (EOFError, OSError):
            _kill_workers(vector_env)

    def worker_failure(self) -> str | None:
        """After a failed async step: which worker raised or died and how (else None)."""
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
    """A call left pending, a worker that raised (pipe closed), or a dead worker."""
    return (
        vector_env._state != AsyncState.DEFAULT
        or any(pipe is None for pipe in vector_env.parent_pipes)
        or any(process.exitcode is not None for process in vector_env.processes)
    )


def _kill_workers(vector_env: VectorEnv) -> None:
    """SIGKILL a failed AsyncVectorEnv's live workers (they ignore SIGINT/SIGTERM), then
    let gymnasium close it without waiting on them."""
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
    """The module docstring's wrapper stack over ``num_envs`` sub-envs of ``factory``
    (``vector_mode`` "async": a process each; ``episode_window`` episodes kept)."""
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
    """SyncVectorEnv under NEXT_STEP autoreset without the sub-envs' step infos (rl never
    reads them; docs/rollout_costs.md): the same outputs bit for bit (tested), info empty."""

    def step(self, actions: Any):
        if self.autoreset_mode != AutoresetMode.NEXT_STEP:
            return super().step(actions)
        observations, rewards = self._env_obs, self._rewards
        terminations, truncations = self._terminations, self._truncations
        resetting = self._autoreset_envs
        for i, (action, env) in enumerate(
            zip(iterate(self.action_space, actions), self.envs, strict=True)
        ):
            if resetting[i]:
                observations[i], _ = env.reset()
                rewards[i], terminations[i], truncations[i] = 0.0, False, False
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
