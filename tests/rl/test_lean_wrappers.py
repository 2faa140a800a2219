"""rl.envs' Lean vector env and statistics wrappers give gymnasium's numbers bit for bit."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers.utils import RunningMeanStd
from gymnasium.wrappers.vector import (
    NormalizeObservation,
    NormalizeReward,
    RecordEpisodeStatistics,
)

from rl.envs import LeanSyncVectorEnv
from rl.wrappers import (
    LeanNormalizeObservation,
    LeanNormalizeReward,
    LeanRecordEpisodeStatistics,
    update_running_moments,
)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(2, 17), (5, 3), (1, 4), (2,), (7,), (1,)])
def test_update_running_moments_equals_running_mean_std_update(dtype, shape) -> None:
    rng = np.random.default_rng(0)
    ours, theirs = RunningMeanStd(shape=shape[1:]), RunningMeanStd(shape=shape[1:])
    for _ in range(300):
        batch = (rng.normal(3.0, 10.0, shape) * rng.uniform(0.1, 5.0)).astype(dtype)
        update_running_moments(ours, batch)
        theirs.update(batch)
        assert type(ours.mean) is type(theirs.mean) and type(ours.var) is type(theirs.var)
        assert np.array_equal(ours.mean, theirs.mean) and np.array_equal(ours.var, theirs.var)
        assert ours.count == theirs.count


def make_stack(env_id: str, lean: bool, max_steps: int, gamma: float = 0.97):
    env = SyncVectorEnv(
        [lambda: gym.make(env_id, max_episode_steps=max_steps)] * 3,
        autoreset_mode=AutoresetMode.NEXT_STEP,
    )
    stats = (LeanRecordEpisodeStatistics if lean else RecordEpisodeStatistics)(env, 10)
    observe = (LeanNormalizeObservation if lean else NormalizeObservation)(stats)
    reward = (LeanNormalizeReward if lean else NormalizeReward)(observe, gamma=gamma)
    return reward, stats, observe


@pytest.mark.parametrize(("env_id", "max_steps"), [("CartPole-v1", 40), ("HalfCheetah-v5", 25)])
def test_lean_wrappers_give_gymnasium_numbers(env_id, max_steps) -> None:
    """CartPole: float32 observations, episodes ending at different steps (terminations
    and truncations); HalfCheetah: float64 observations, truncations of all envs at once."""
    ours, ours_stats, ours_obs = make_stack(env_id, True, max_steps)
    theirs, theirs_stats, theirs_obs = make_stack(env_id, False, max_steps)
    ours.action_space.seed(1)
    first, _ = ours.reset(seed=5)
    again, _ = theirs.reset(seed=5)
    assert np.array_equal(first, again)
    for step in range(600):
        actions = ours.action_space.sample()
        a, b = ours.step(actions), theirs.step(actions)
        for got, want in zip(a[:4], b[:4], strict=True):
            assert got.dtype == want.dtype and np.array_equal(got, want), step
        assert a[4].keys() == b[4].keys()
        if step == 300:  # frozen statistics (evaluation, replay on resume) are honoured too
            ours_obs.update_running_mean = theirs_obs.update_running_mean = False
            ours.update_running_mean = theirs.update_running_mean = False
    assert np.array_equal(ours_obs.obs_rms.mean, theirs_obs.obs_rms.mean)
    assert np.array_equal(ours_obs.obs_rms.var, theirs_obs.obs_rms.var)
    assert ours.return_rms.mean == theirs.return_rms.mean
    assert ours.return_rms.var == theirs.return_rms.var
    assert ours.return_rms.count == theirs.return_rms.count
    assert np.array_equal(ours.accumulated_reward, theirs.accumulated_reward)
    assert ours_stats.episode_count == theirs_stats.episode_count > 10
    assert list(ours_stats.return_queue) == list(theirs_stats.return_queue)
    assert list(ours_stats.length_queue) == list(theirs_stats.length_queue)


@pytest.mark.parametrize(("env_id", "max_steps"), [("CartPole-v1", 30), ("HalfCheetah-v5", 20)])
def test_lean_sync_vector_env_steps_like_sync_vector_env(env_id, max_steps) -> None:
    def make(cls):
        return cls(
            [lambda: gym.make(env_id, max_episode_steps=max_steps)] * 3,
            autoreset_mode=AutoresetMode.NEXT_STEP,
        )

    ours, theirs = make(LeanSyncVectorEnv), make(SyncVectorEnv)
    first, _ = ours.reset(seed=9)
    assert np.array_equal(first, theirs.reset(seed=9)[0])
    ours.action_space.seed(2)
    resets = 0
    for _ in range(300):
        actions = ours.action_space.sample()
        a, b = ours.step(actions), theirs.step(actions)
        for got, want in zip(a[:4], b[:4], strict=True):
            assert got.dtype == want.dtype and np.array_equal(got, want)
        assert a[4] == {}  # the sub-envs' infos are not gathered
        resets += int(np.logical_or(a[2], a[3]).sum())
    assert resets > 10
    a[0][:] = 0  # a copy: the env's own buffer is untouched
    assert not np.array_equal(ours.step(ours.action_space.sample())[0], a[0])
