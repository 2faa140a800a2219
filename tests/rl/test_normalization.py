"""Observation normalization: the truncation bootstrap sees the same statistics as its
neighbours, and the statistics are frozen for evaluation, saved and restored."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from gymnasium.wrappers.utils import RunningMeanStd
from toy_envs import CounterEnv

import rl
from rl.config import PolicyConfig
from rl.envs import make_env_factory, make_vector_envs
from rl.policies import make_policy
from rl.rollout import RolloutCollector
from rl.wrappers import FrozenObservationNormalizer


def collect(normalize_observations, steps=12, num_envs=2):
    factory = make_env_factory(None, env_fn=CounterEnv)
    envs = make_vector_envs(factory, num_envs, normalize_observations=normalize_observations)
    policy = make_policy(envs.observation_dim, envs.action_space, PolicyConfig(hidden_sizes=(4,)))
    collector = RolloutCollector(envs, policy, steps, torch.Generator().manual_seed(0))
    collector.reset(seed=0)
    rollout = collector.collect()
    return envs, rollout


def test_truncation_bootstrap_sees_observations_normalized_with_the_same_statistics():
    """Replay the raw observation stream through a reference RunningMeanStd: every row,
    including the final observations that truncated slots bootstrap from, must be the raw
    row normalized with the statistics updated by that very row (not raw, not stale)."""
    _, raw = collect(normalize_observations=False)
    envs, normalized = collect(normalize_observations=True)
    assert bool(raw.truncated.any()) and bool(raw.terminated.any())
    raw_rows = raw.observations.double().numpy()
    statistics = RunningMeanStd(shape=(2,), dtype=np.float32)
    expected = np.empty_like(raw_rows, dtype=np.float32)
    for t, row in enumerate(raw_rows):
        statistics.update(row)
        expected[t] = ((row - statistics.mean) / np.sqrt(statistics.var + 1e-8)).astype(np.float32)
    np.testing.assert_array_equal(normalized.observations.numpy(), expected)
    # the bootstrap observations of truncated slots in particular are normalized, not raw
    t, i = raw.truncated.nonzero()[0].tolist()
    assert not np.allclose(normalized.observations[t + 1, i].numpy(), raw_rows[t + 1, i])
    envs.close()


def test_frozen_normalizer_reproduces_the_wrapper_bit_for_bit():
    envs, _ = collect(normalize_observations=True)
    frozen = FrozenObservationNormalizer.from_wrapper(envs.obs_normalizer)
    raw = np.array([[3.0, 1.0], [1001.0, 4.0]])
    envs.obs_normalizer.update_running_mean = False
    np.testing.assert_array_equal(frozen(raw), envs.obs_normalizer.observations(raw))
    restored = FrozenObservationNormalizer.from_state_dict(frozen.state_dict())
    np.testing.assert_array_equal(restored(raw), frozen(raw))
    envs.close()


@pytest.fixture(scope="module")
def normalized_agent(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    config = rl.TRPOConfig(
        env_id="Pendulum-v1",
        total_steps=1024,
        steps_per_iteration=512,
        normalize_observations=True,
        normalize_rewards=True,
        run_dir=str(run_dir),
    )
    agent = rl.TRPO(config).learn(progress="none")
    yield agent
    agent.close()


def test_evaluation_uses_frozen_statistics(normalized_agent):
    before = normalized_agent.obs_normalizer
    assert before is not None and not np.allclose(before.var, 1.0)
    normalized_agent.evaluate(episodes=2)
    after = normalized_agent.obs_normalizer
    np.testing.assert_array_equal(before.mean, after.mean)
    np.testing.assert_array_equal(before.var, after.var)


def test_predict_normalizes_raw_observations(normalized_agent):
    raw = np.array([0.5, -0.5, 2.0], dtype=np.float32)
    normalized = normalized_agent.obs_normalizer(raw[None])
    with torch.no_grad():
        mean = normalized_agent.policy.network(torch.from_numpy(normalized))
    expected = np.clip(mean.numpy()[0], -2.0, 2.0)
    np.testing.assert_allclose(normalized_agent.predict(raw), expected, rtol=1e-6)


def test_saved_model_restores_statistics_and_actions(normalized_agent):
    loaded = rl.TRPO.load(normalized_agent.config.run_dir + "/model.pt")
    np.testing.assert_array_equal(loaded.obs_normalizer.mean, normalized_agent.obs_normalizer.mean)
    np.testing.assert_array_equal(loaded.obs_normalizer.var, normalized_agent.obs_normalizer.var)
    assert loaded.reward_statistics == normalized_agent.reward_statistics
    assert loaded.reward_statistics["count"] > 1000
    observations = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        loaded.predict(observations), normalized_agent.predict(observations)
    )
    assert loaded.evaluate(episodes=2) == normalized_agent.evaluate(episodes=2)
    loaded.close()


def test_a_second_learn_continues_the_statistics(normalized_agent):
    first = normalized_agent.obs_normalizer
    reward_count = normalized_agent.reward_statistics["count"]
    normalized_agent.learn(total_steps=normalized_agent.step + 512, progress="none")
    second = normalized_agent.obs_normalizer
    assert second.count == first.count + 512 + 2  # one reset row of 2 envs, 256 steps of 2
    assert normalized_agent.reward_statistics["count"] > reward_count


def test_model_file_is_loaded_without_running_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = tmp_path / "model.pt"
    torch.save({"format": "rl.trpo.model/1", "payload": Payload()}, path)
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        rl.TRPO.load(path)
