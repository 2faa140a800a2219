"""The value function learns V ≈ 1/(1-γ) on an infinite-horizon env cut by time limits
(SB3's test_infinite_horizon): it fails if truncation were treated as termination."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from toy_envs import ConstantRewardEnv

import rl
from rl.config import ValueConfig
from rl.value import explained_variance, fit_value, make_value


def test_value_learns_infinite_horizon_return_despite_time_limits():
    gamma = 0.9
    config = rl.TRPOConfig(
        env_id="constant-reward",
        total_steps=8192,
        num_envs=2,
        steps_per_iteration=512,
        gamma=gamma,
        lam=0.95,
        seed=0,
        value={"epochs": 10, "learning_rate": 3e-3, "minibatch_size": 64},
    )
    agent = rl.TRPO(config, env_fn=lambda: gym.wrappers.TimeLimit(ConstantRewardEnv(), 15))
    agent.learn(progress="none")
    value = agent.value(torch.ones(1, 1)).item()
    # true value 10; treating the 15-step limit as termination averages to about 6.5
    assert abs(value - 1.0 / (1.0 - gamma)) < 0.5, value


def test_fit_value_regresses_to_targets():
    torch.manual_seed(0)
    observations = torch.linspace(-1, 1, 256).unsqueeze(1)
    targets = 3.0 * observations.squeeze(1) + 1.0
    network = make_value(1, ValueConfig(hidden_sizes=(16,)))
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    first = fit_value(network, optimizer, observations, targets, 1, 32, generator)
    last = fit_value(network, optimizer, observations, targets, 100, 32, generator)
    assert last < 0.01 * first
    with torch.no_grad():
        assert explained_variance(network(observations), targets) > 0.99


def test_explained_variance_known_values():
    targets = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(targets, targets) == 1.0
    assert explained_variance(torch.full((4,), 2.5), targets) == 0.0
    assert np.isnan(explained_variance(targets, torch.ones(4)))
