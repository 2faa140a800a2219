"""Exact resume of the training envs: each sub-env records how its episode began and the
actions since, and a resume replays them (docs/checkpoints.md says how, and its limits)."""

from __future__ import annotations

import hashlib
import signal
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from rl.envs import EnvFactory, VectorEnvs
from rl.rollout import RolloutCollector
from rl.signals import StopOnSignals
from rl.wrappers import FrozenObservationNormalizer, restore_reward_statistics, reward_statistics

__all__ = ["EpisodeRecorder", "RecordingFactory", "capture_env_state", "plain_data",
           "restore_env_state"]  # fmt: skip


def plain_data(value: Any) -> Any:
    """numpy arrays and scalars inside an RNG state as lists and Python numbers."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, Mapping):
        return {key: plain_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(item) for item in value]
    return value


def _generator_state(generator: np.random.Generator) -> dict[str, Any]:
    return plain_data(generator.bit_generator.state)


def _generator_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = dict(state)
    return np.random.Generator(bit_generator)


def _digest(observation: Any) -> str:
    """A digest of an observation's bytes, dtype and shape (``repr`` for non-arrays)."""
    array = np.asarray(observation)
    if array.dtype == object:
        return hashlib.sha256(repr(observation).encode()).hexdigest()
    header = f"{array.dtype.str}{array.shape}".encode()
    return hashlib.sha256(header + np.ascontiguousarray(array).tobytes()).hexdigest()


def _emulator_state(env: gym.Env) -> torch.Tensor | None:
    """An ALE env's emulator snapshot with its RNG, as bytes (None for other envs)."""
    unwrapped = env.unwrapped
    if not type(unwrapped).__module__.startswith("ale_py"):
        return None
    data = unwrapped.clone_state(include_rng=True).serialize()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _restore_emulator_state(env: gym.Env, state: torch.Tensor) -> None:
    import ale_py

    env.unwrapped.restore_state(ale_py.ALEState(state.numpy().tobytes()))


class EpisodeRecorder(gym.Wrapper):
    """Keeps how the current episode began and the actions since, to replay it on resume:
    ``twin.replay_request = env.episode_record()``, then ``twin.replay()`` is True."""

    MAX_REPLAY_ACTIONS = 100_000  # per episode: memory, checkpoint size and replay time

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.replayable = True  # False once the episode outgrew MAX_REPLAY_ACTIONS
        # the reset's seed, else the env's np_random state and the ALE emulator's before it
        self.episode_start: dict[str, Any] = dict.fromkeys(("seed", "rng_state", "emulator_state"))
        self.episode_actions: list[Any] = []
        self.episode_over = self.reset_pending = False
        self.replay_request: dict[str, Any] | None = None
        self._last_observation: Any = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        unseeded = seed is None
        self.episode_start = {
            "seed": seed,
            "rng_state": _generator_state(self.env.unwrapped.np_random) if unseeded else None,
            "emulator_state": _emulator_state(self.env) if unseeded else None,
        }
        self.episode_actions = []
        self.replayable = True
        self.episode_over = self.reset_pending = False
        observation, info = self.env.reset(seed=seed, options=options)
        self._last_observation = observation
        return observation, info

    def step(self, action: Any):
        if self.reset_pending:  # the autoreset the vector env owed before the checkpoint
            observation, info = self.reset()
            return observation, 0.0, False, False, info
        if self.replayable and len(self.episode_actions) < self.MAX_REPLAY_ACTIONS:
            self.episode_actions.append(np.array(action, copy=True))
        elif self.replayable:  # too long to replay: stop recording this episode
            self.episode_actions, self.replayable = [], False
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.episode_over = bool(terminated or truncated)
        self._last_observation = observation
        return observation, reward, terminated, truncated, info

    def episode_record(self) -> dict[str, Any]:
        """This episode's start, actions and end state, as plain data."""
        actions = None
        if self.episode_actions and self.replayable:  # arrays: rl's action spaces are flat
            actions = torch.from_numpy(np.stack(self.episode_actions))
        return {
            **self.episode_start,
            "actions": actions,
            "episode_over": self.episode_over or self.reset_pending,
            "observation_digest": _digest(self._last_observation),
            "action_space_rng": _generator_state(self.env.action_space.np_random),
            "replayable": self.replayable,
        }

    def replay(self) -> bool:
        """Bring the env to ``replay_request``'s state; True if the last observation matches."""
        record, self.replay_request = self.replay_request, None
        if record is None:
            raise RuntimeError("EpisodeRecorder.replay needs replay_request set to a record")
        if record["seed"] is not None:
            observation, _ = self.env.reset(seed=record["seed"])
        else:
            if record["emulator_state"] is not None:
                _restore_emulator_state(self.env, record["emulator_state"])
            self.env.unwrapped.np_random = _generator_from_state(record["rng_state"])
            observation, _ = self.env.reset()
        actions = [] if record["actions"] is None else list(record["actions"].numpy())
        for action in actions:
            observation, *_ = self.env.step(action)
        self.replayable = bool(record.get("replayable", True))
        self.env.action_space.np_random.bit_generator.state = dict(record["action_space_rng"])
        self.episode_start = {key: record[key] for key in self.episode_start}
        self.episode_actions = actions
        self.episode_over = self.reset_pending = bool(record["episode_over"])
        self._last_observation = observation
        return self.replayable and _digest(observation) == record["observation_digest"]


@dataclass(frozen=True)
class RecordingFactory:
    """An env factory whose envs are wrapped in ``EpisodeRecorder``; ``ignore_signals``
    for AsyncVectorEnv workers (the main process stops them)."""

    factory: EnvFactory
    ignore_signals: bool = False

    def __call__(self) -> EpisodeRecorder:
        if self.ignore_signals and threading.current_thread() is threading.main_thread():
            for number in StopOnSignals.SIGNALS:  # SIGINT, SIGTERM, SIGHUP: the main decides
                signal.signal(number, signal.SIG_IGN)
        return EpisodeRecorder(self.factory())


def _episode_statistics(stats: RecordEpisodeStatistics) -> dict[str, Any]:
    return {
        "episode_returns": torch.from_numpy(np.array(stats.episode_returns)),
        "episode_lengths": torch.from_numpy(np.array(stats.episode_lengths)),
        "prev_dones": torch.from_numpy(np.array(stats.prev_dones)),
        "episode_count": int(stats.episode_count),
        "return_queue": torch.tensor(list(stats.return_queue), dtype=torch.float64),
        "length_queue": torch.tensor(list(stats.length_queue), dtype=torch.int64),
    }


def _restore_episode_statistics(stats: RecordEpisodeStatistics, state: Mapping[str, Any]) -> None:
    stats.episode_returns = state["episode_returns"].numpy().copy()
    stats.episode_lengths = state["episode_lengths"].numpy().copy()
    stats.prev_dones = state["prev_dones"].numpy().copy()
    stats.episode_count = int(state["episode_count"])
    maxlen = stats.return_queue.maxlen
    stats.return_queue = deque(state["return_queue"].numpy().tolist(), maxlen=maxlen)
    stats.length_queue = deque(state["length_queue"].numpy().tolist(), maxlen=maxlen)


def capture_env_state(envs: VectorEnvs, collector: RolloutCollector) -> dict[str, Any]:
    """The training envs' state between two rollouts, as plain data."""
    reward_normalizer = envs.reward_normalizer
    return {
        "num_envs": envs.num_envs,
        "sub_envs": list(envs.env.unwrapped.call("episode_record")),
        "episode_statistics": _episode_statistics(envs.episode_stats),
        "obs_normalizer": None
        if envs.obs_normalizer is None
        else FrozenObservationNormalizer.from_wrapper(envs.obs_normalizer).state_dict(),
        "reward_normalizer": None
        if reward_normalizer is None
        else {
            **reward_statistics(reward_normalizer),
            "accumulated_reward": torch.from_numpy(np.array(reward_normalizer.accumulated_reward)),
            "prev_dones": torch.from_numpy(np.array(reward_normalizer._prev_dones)),
        },
        "collector": collector.state_dict(),
    }


def restore_env_state(
    envs: VectorEnvs, collector: RolloutCollector, state: Mapping[str, Any]
) -> list[int]:
    """Bring freshly reset training envs (as many: num_envs is structural) to a
    ``capture_env_state`` state; returns those whose replay missed the last observation."""
    vector_env = envs.env.unwrapped
    vector_env.set_attr("replay_request", list(state["sub_envs"]))
    reproduced = vector_env.call("replay")
    _restore_episode_statistics(envs.episode_stats, state["episode_statistics"])
    if envs.obs_normalizer is not None and state["obs_normalizer"] is not None:
        FrozenObservationNormalizer.from_state_dict(state["obs_normalizer"]).restore_into(
            envs.obs_normalizer
        )
    normalizer, saved_rewards = envs.reward_normalizer, state["reward_normalizer"]
    if normalizer is not None and saved_rewards is not None:
        restore_reward_statistics(normalizer, saved_rewards)
        normalizer.accumulated_reward = saved_rewards["accumulated_reward"].numpy().copy()
        normalizer._prev_dones = saved_rewards["prev_dones"].numpy().copy()
    collector.load_state_dict(state["collector"])
    return [index for index, same in enumerate(reproduced) if not same]
