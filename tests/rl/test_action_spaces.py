"""Each supported action space learns a tiny env with a known optimum; others are refused."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
import toy_envs
from gymnasium import spaces
from torch import nn

import rl


def make_agent(env_class, total_steps, **overrides):
    config = rl.TRPOConfig(
        env_id=env_class.__name__,
        total_steps=total_steps,
        num_envs=4,
        steps_per_iteration=512,
        gamma=0.0,  # each step is a bandit: the optimum is greedy
        lam=0.0,
        max_kl=0.05,
        seed=0,
        policy={"hidden_sizes": (32,)},
        value={"hidden_sizes": (32,), "epochs": 2},
        **overrides,
    )
    return rl.TRPO(config, env_fn=env_class)


@pytest.mark.parametrize(
    ("env_class", "total_steps", "optimum", "tolerance", "untrained_below"),
    [
        (toy_envs.BoxTargetEnv, 8192, 0.0, 0.1, -2.0),  # random: about -21
        (toy_envs.DiscreteTargetEnv, 4096, 8.0, 0.0, 5.0),  # random: 8/3
        (toy_envs.MultiDiscreteTargetEnv, 4096, 16.0, 0.0, 10.0),  # random: 14/3
        (toy_envs.MultiBinaryTargetEnv, 4096, 32.0, 0.0, 24.0),  # random: 16
    ],
    ids=["box-gaussian", "discrete-categorical", "multidiscrete", "multibinary"],
)
def test_action_space_reaches_known_optimum(
    env_class, total_steps, optimum, tolerance, untrained_below
):
    agent = make_agent(env_class, total_steps)
    untrained = agent.evaluate(episodes=20, deterministic=False)
    assert untrained["mean_return"] < untrained_below, untrained
    result = agent.learn(progress="none").evaluate(episodes=20)
    agent.close()
    assert result["mean_length"] == env_class.horizon
    assert result["mean_return"] >= optimum - tolerance, result


def test_predict_returns_env_actions_for_dict_observations():
    agent = make_agent(toy_envs.MultiDiscreteTargetEnv, 4096).learn(progress="none")
    action = agent.predict({"first": 2, "second": 1})
    assert agent.action_space.contains(action)
    assert action.tolist() == [2, 1]


def test_box_actions_are_clipped_only_when_sent_to_the_env():
    distribution = rl.policies.make_distribution(spaces.Box(-1.0, 1.0, (2,), np.float32))
    sampled = torch.tensor([[3.0, -0.5], [-7.0, 0.25]])
    sent = distribution.to_env(sampled)
    assert sent.dtype == np.float32
    assert sent.tolist() == [[1.0, -0.5], [-1.0, 0.25]]
    assert sampled.tolist() == [[3.0, -0.5], [-7.0, 0.25]]  # the policy's sample is untouched


@pytest.mark.parametrize(
    ("env_class", "message"),
    [
        (toy_envs.TextActionEnv, "Unsupported action space Text"),
        (toy_envs.TextObservationEnv, "Unsupported observation space Text"),
    ],
)
def test_unsupported_spaces_are_named(env_class, message):
    config = rl.TRPOConfig(env_id="unsupported")
    with pytest.raises(ValueError, match=message):
        rl.TRPO(config, env_fn=env_class)


def test_custom_policy_and_value_modules_are_used():
    config = rl.TRPOConfig(env_id="CartPole-v1", total_steps=512, steps_per_iteration=512)
    network = nn.Sequential(nn.Linear(4, 2))
    value = nn.Sequential(nn.Linear(4, 1))
    before = network[0].weight.detach().clone()
    agent = rl.TRPO(config, policy=network, value=value).learn(progress="none")
    assert agent.policy.network is network
    assert agent.value(torch.zeros(3, 4)).shape == (3,)
    assert not torch.equal(network[0].weight, before)


def test_env_factory_wrapping_a_gymnasium_env():
    config = rl.TRPOConfig(total_steps=256, num_envs=1, steps_per_iteration=256)
    agent = rl.TRPO(config, env_fn=lambda: gym.make("CartPole-v1")).learn(progress="none")
    assert agent.step == 256
