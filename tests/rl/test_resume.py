"""Exact resume: a run stopped after a checkpoint and resumed writes the rows of a run that
never stopped, and restored envs continue exactly as the originals would have."""

from __future__ import annotations

import json
import os
import signal

import gymnasium as gym
import numpy as np
import pytest
import torch
from toy_envs import CounterEnv

import rl
from rl.checkpoint import CheckpointWarning, read_checkpoint
from rl.config import PolicyConfig
from rl.envs import make_env_factory, make_vector_envs
from rl.policies import make_policy
from rl.replay import EpisodeRecorder, RecordingFactory, capture_env_state, restore_env_state
from rl.rollout import RolloutCollector
from tests.conftest import rows


# ------------------------------------------------------------------- env state alone
def recording_collector(env_id, num_envs, steps, normalize):
    factory = RecordingFactory(make_env_factory(env_id))
    envs = make_vector_envs(
        factory, num_envs, normalize_observations=normalize, normalize_rewards=normalize
    )
    torch.manual_seed(0)
    policy = make_policy(envs.observation_dim, envs.action_space, PolicyConfig(hidden_sizes=(8,)))
    return envs, RolloutCollector(envs, policy, steps, torch.Generator().manual_seed(1)), policy


def clone(rollout):
    return {name: getattr(rollout, name).clone() for name in rollout.__dataclass_fields__}


@pytest.mark.parametrize(
    ("env_id", "steps", "normalize"),
    [("CartPole-v1", 5, False), ("CartPole-v1", 5, True), ("Pendulum-v1", 50, True)],
)
def test_restored_envs_continue_exactly_as_the_originals(env_id, steps, normalize):
    """Capture the envs between every two rollouts, restore each capture into fresh envs
    and check that the next two rollouts are the originals' bit for bit, including
    boundaries where an env had just ended (its next slot a NEXT_STEP reset slot)."""
    envs, collector, policy = recording_collector(env_id, 2, steps, normalize)
    collector.reset(seed=0)
    captures, rollouts = [], []
    for _ in range(30):
        captures.append((capture_env_state(envs, collector), collector.generator.get_state()))
        rollouts.append(clone(collector.collect()))
    envs.close()
    pending = [k for k in range(1, 28) if bool(captures[k][0]["collector"]["previous_done"].any())]
    assert pending  # the NEXT_STEP pending-reset case is covered
    for k in sorted({1, 2, *pending[:3]}):
        fresh, fresh_collector, _ = recording_collector(env_id, 2, steps, normalize)
        fresh_collector.policy = policy
        fresh_collector.reset(seed=123)  # whatever the reset, the restore decides
        assert restore_env_state(fresh, fresh_collector, captures[k][0]) == []
        fresh_collector.generator.set_state(captures[k][1])
        for expected in rollouts[k : k + 2]:
            actual = clone(fresh_collector.collect())
            for name, tensor in expected.items():
                torch.testing.assert_close(actual[name], tensor, rtol=0, atol=0, msg=name)
        fresh.close()


def test_replay_of_an_env_with_hidden_state_warns():
    """CounterEnv counts episodes across resets, a state no seed restores: the replay
    notices that the last observation differs and says so."""
    envs = make_vector_envs(RecordingFactory(make_env_factory(None, env_fn=CounterEnv)), 1)
    policy = make_policy(2, envs.action_space, PolicyConfig(hidden_sizes=(4,)))
    collector = RolloutCollector(envs, policy, 7)
    collector.reset(seed=0)
    collector.collect()
    collector.collect()  # in the third episode (the fresh env's reset replays the second)
    state = capture_env_state(envs, collector)
    fresh = make_vector_envs(RecordingFactory(make_env_factory(None, env_fn=CounterEnv)), 1)
    fresh_collector = RolloutCollector(fresh, policy, 7)
    fresh_collector.reset(seed=0)
    assert restore_env_state(fresh, fresh_collector, state) == [0]
    envs.close()
    fresh.close()


def test_atari_episodes_after_the_first_replay_exactly():
    """ALE carries game state and its sticky-action RNG across unseeded resets: the
    recorder snapshots the emulator at each such reset, so later episodes replay too."""
    ale_py = pytest.importorskip("ale_py")
    gym.register_envs(ale_py)
    env = EpisodeRecorder(gym.make("ALE/Pong-v5", repeat_action_probability=0.25))
    env.reset(seed=1)
    actions = np.random.default_rng(0).integers(6, size=150)
    for action in actions[:50]:
        env.step(action)
    env.reset()  # the second episode starts from where the emulator and its RNG were
    for action in actions[50:]:
        env.step(action)
    twin = EpisodeRecorder(gym.make("ALE/Pong-v5", repeat_action_probability=0.25))
    twin.reset(seed=1)
    twin.replay_request = env.episode_record()
    assert twin.replay()
    twin.replay_request = {**env.episode_record(), "emulator_state": None}
    assert not twin.replay()  # without the emulator snapshot the replay would differ
    env.close()
    twin.close()


# ------------------------------------------------------------------- whole runs
def cartpole_config(run_dir, **overrides):
    settings = dict(
        env_id="CartPole-v1",
        total_steps=2048,
        steps_per_iteration=256,
        seed=3,
        eval_every=512,
        eval_episodes=2,
        checkpoint_every=2,
        policy={"hidden_sizes": (16,)},
        value={"hidden_sizes": (16,), "epochs": 2},
        run_dir=str(run_dir),
    )
    return rl.TRPOConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def uninterrupted_cartpole(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    rl.TRPO(cartpole_config(run_dir)).learn(progress="none")
    return run_dir


def test_crashed_run_resumes_to_the_rows_of_an_uninterrupted_run(tmp_path, uninterrupted_cartpole):
    def crash_after_iteration_5(agent, row):
        if row["iteration"] == 5:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        rl.TRPO(cartpole_config(tmp_path)).learn(progress="none", callback=crash_after_iteration_5)
    assert len(rows(tmp_path)) == 5  # iteration 5 was written after the last checkpoint (4)
    agent = rl.TRPO.resume(tmp_path)
    assert (agent.iteration, agent.step) == (4, 1024)
    assert [row["iteration"] for row in rows(tmp_path)] == [1, 2, 3, 4]  # iteration 5 dropped
    agent.learn(progress="none")
    expected = rows(uninterrupted_cartpole)
    assert len(expected) == 8
    assert rows(tmp_path) == expected  # every field but the timing ones
    assert rows(tmp_path, "evals.jsonl") == rows(uninterrupted_cartpole, "evals.jsonl")
    times = [json.loads(line)["time"] for line in (tmp_path / "metrics.jsonl").open()]
    assert times == sorted(times)  # wall time continues across the resume


def test_async_envs_resume_to_the_rows_of_the_sync_run(tmp_path, uninterrupted_cartpole):
    """AsyncVectorEnv workers record and replay in their own processes."""
    config = cartpole_config(tmp_path, vector_mode="async")
    with pytest.raises(KeyboardInterrupt):
        rl.TRPO(config).learn(
            progress="none", callback=lambda agent, row: agent.iteration < 4 or _interrupt()
        )
    rl.TRPO.resume(tmp_path).learn(progress="none")
    assert rows(tmp_path) == rows(uninterrupted_cartpole)


def test_sigint_stops_after_the_iteration_with_a_checkpoint(tmp_path, uninterrupted_cartpole):
    def interrupt_during_iteration_3(agent, row):
        if row["iteration"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # handled: training finishes iteration 3

    handler_before = signal.getsignal(signal.SIGINT)
    config = cartpole_config(tmp_path, checkpoint_every=0)
    agent = rl.TRPO(config).learn(progress="none", callback=interrupt_during_iteration_3)
    assert agent.stopped_by == "SIGINT" and agent.iteration == 3
    assert signal.getsignal(signal.SIGINT) is handler_before
    assert read_checkpoint(tmp_path / "checkpoint.pt")["progress"]["iteration"] == 3
    assert (tmp_path / "model.pt").exists()
    rl.TRPO.resume(tmp_path).learn(progress="none")
    assert rows(tmp_path) == rows(uninterrupted_cartpole)


def test_normalized_run_resumes_exactly(tmp_path_factory):
    """Pendulum with observation and reward normalization: the running statistics,
    NormalizeReward's discounted returns and the Gaussian policy's sampling all continue."""

    def config(run_dir):
        return rl.TRPOConfig(
            env_id="Pendulum-v1",
            total_steps=1800,
            steps_per_iteration=300,
            seed=1,
            checkpoint_every=1,
            normalize_observations=True,
            normalize_rewards=True,
            policy={"hidden_sizes": (16,)},
            value={"hidden_sizes": (16,), "epochs": 2},
            run_dir=str(run_dir),
        )

    uninterrupted, stopped = tmp_path_factory.mktemp("whole"), tmp_path_factory.mktemp("split")
    whole = rl.TRPO(config(uninterrupted)).learn(progress="none")

    def interrupt_after_iteration_2(agent, row):
        if row["iteration"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rl.TRPO(config(stopped)).learn(progress="none", callback=interrupt_after_iteration_2)
    resumed = rl.TRPO.resume(stopped)
    assert resumed.iteration == 2
    resumed.learn(progress="none")
    assert rows(stopped) == rows(uninterrupted)
    np.testing.assert_array_equal(resumed.obs_normalizer.mean, whole.obs_normalizer.mean)
    assert resumed.reward_statistics == whole.reward_statistics


def test_resuming_an_env_with_hidden_state_warns_and_goes_on(tmp_path):
    config = rl.TRPOConfig(
        env_id="counter",
        total_steps=28,
        num_envs=1,
        steps_per_iteration=7,
        checkpoint_every=2,
        run_dir=str(tmp_path),
    )
    with pytest.raises(KeyboardInterrupt):
        rl.TRPO(config, env_fn=CounterEnv).learn(
            progress="none", callback=lambda agent, row: agent.iteration < 2 or _interrupt()
        )
    agent = rl.TRPO.resume(tmp_path, env_fn=CounterEnv)
    with pytest.warns(CheckpointWarning, match="did not return to their checkpointed state"):
        agent.learn(progress="none")
    assert agent.iteration == 4


def _interrupt():
    raise KeyboardInterrupt
