"""No learned transition crosses an episode boundary under gymnasium's NEXT_STEP autoreset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from toy_envs import CounterEnv

from rl.config import PolicyConfig
from rl.envs import make_env_factory, make_vector_envs
from rl.policies import make_policy
from rl.rollout import RolloutCollector


def make_collector(num_envs=3, steps=7, vector_mode="sync", **env_options):
    envs = make_vector_envs(
        make_env_factory(None, env_fn=CounterEnv), num_envs, vector_mode, **env_options
    )
    policy = make_policy(envs.observation_dim, envs.action_space, PolicyConfig(hidden_sizes=(8,)))
    return envs, RolloutCollector(envs, policy, steps, torch.Generator().manual_seed(0))


def check_rollout(rollout):
    """Every valid slot links an observation to its successor within one episode; every
    invalid slot is the reset step after an episode's last step."""
    episode = rollout.observations[..., 0]
    time = rollout.observations[..., 1]
    valid = rollout.valid
    same_episode = episode[1:] == episode[:-1]
    next_time = time[1:] == time[:-1] + 1
    assert bool((same_episode & next_time)[valid].all())
    # a reset slot starts a new episode at t = 0 and carries no reward
    assert bool((~same_episode[~valid]).all())
    assert bool((time[1:][~valid] == 0).all())
    assert bool((rollout.rewards[~valid] == 0).all())
    # the reward of a valid slot is the step index reached, as CounterEnv pays
    torch.testing.assert_close(rollout.rewards[valid], time[1:][valid])


@pytest.mark.parametrize("vector_mode", ["sync", "async"])
def test_no_transition_crosses_an_episode_boundary(vector_mode):
    envs, collector = make_collector(vector_mode=vector_mode)
    collector.reset(seed=0)
    states = []
    for _ in range(4):  # episodes end inside rollouts and at their edges
        rollout = collector.collect()
        check_rollout(rollout)
        valid = rollout.valid
        done = rollout.terminated | rollout.truncated
        # the slot after a done is invalid, within a rollout
        assert bool((~valid[1:][done[:-1]]).all())
        states += [tuple(rollout.observations[t, i].tolist()) for t, i in valid.nonzero().tolist()]
    envs.close()
    # each (episode, t) state was learned from once, and each episode is whole: t = 0..L-1
    assert len(states) == len(set(states))
    episodes = {}
    for episode, t in states:
        episodes.setdefault(int(episode), []).append(int(t))
    lengths = CounterEnv().lengths
    finished = [e for e in episodes if e + 1 in episodes]  # a later episode of the same env
    assert len(finished) >= 10
    for episode in finished:
        assert sorted(episodes[episode]) == list(range(lengths[episode % 1000 % len(lengths)]))


def test_reset_slot_at_the_start_of_a_rollout_is_masked():
    envs, collector = make_collector(num_envs=1, steps=3)  # first episode: 3 steps, terminated
    collector.reset(seed=0)
    first = collector.collect()
    assert first.terminated[-1, 0] and first.valid.all()
    second = collector.collect()
    assert second.valid[:, 0].tolist() == [False, True, True]
    assert second.observations[0, 0, 1] == 3  # the final observation carried over
    check_rollout(second)
    envs.close()


def test_terminal_and_truncated_flags_follow_the_env():
    envs, collector = make_collector(num_envs=1, steps=17)
    collector.reset(seed=0)
    rollout = collector.collect()
    # CounterEnv: lengths (3, 5, 2, 4), ending terminated, truncated, truncated, terminated;
    # each end is followed by one reset slot
    terminated = rollout.terminated[:, 0].nonzero().squeeze(1).tolist()
    truncated = rollout.truncated[:, 0].nonzero().squeeze(1).tolist()
    assert terminated == [2, 16]
    assert truncated == [8, 11]
    assert (~rollout.valid[:, 0]).nonzero().squeeze(1).tolist() == [3, 9, 12]
    envs.close()


def test_collector_requires_next_step_autoreset():
    envs, _ = make_collector()
    envs.env.metadata = {**envs.env.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}
    policy = make_policy(2, envs.action_space, PolicyConfig())
    with pytest.raises(ValueError, match="NEXT_STEP"):
        RolloutCollector(envs, policy, 4)
    envs.close()


def test_buffers_are_preallocated_and_reused():
    envs, collector = make_collector()
    first = collector.collect()
    pointers = (first.observations.data_ptr(), first.actions.data_ptr(), first.rewards.data_ptr())
    second = collector.collect()
    assert pointers == (
        second.observations.data_ptr(),
        second.actions.data_ptr(),
        second.rewards.data_ptr(),
    )
    assert np.shares_memory(first.valid.numpy(), second.valid.numpy())
    envs.close()
