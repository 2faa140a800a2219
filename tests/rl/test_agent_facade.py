"""The seed's TRPOAgent: its exact call works, over rl.TRPO, on the env instance it is given."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image

import rl
from rl import TRPOAgent


def test_the_seed_readme_call_trains_pendulum_for_a_few_epochs():
    env = gym.make("Pendulum-v1")
    agent = TRPOAgent(env.observation_space.shape[0], env.action_space.shape[0], hidden_dim=64,
                      max_kl=0.01, gamma=0.99, lam=0.95, cg_iters=10, backtrack_iters=10,
                      damping=0.1)  # fmt: skip
    history = agent.train(env, num_epochs=3, steps_per_epoch=400)
    assert [row["step"] for row in history] == [400, 800, 1200]
    assert all(row["accepted"] and row["kl"] <= 0.01 * (1 + 1e-6) for row in history)
    assert history[-1]["episode_return_mean"] < 0  # Pendulum's episodes (200 steps) finished
    assert isinstance(agent.trpo, rl.TRPO)  # a facade, not a second implementation
    config = agent.trpo.config
    assert (config.max_kl, config.gamma, config.lam, config.cg_iters) == (0.01, 0.99, 0.95, 10)
    assert (config.backtrack_iters, config.damping, config.num_envs) == (10, 0.1, 1)
    assert config.policy.hidden_sizes == (64, 64) == config.value.hidden_sizes
    observation, _ = env.reset(seed=0)  # the caller's env is still open and usable
    action = agent.act(observation)
    assert env.action_space.contains(action)
    env.step(action)
    assert len(agent.train(env, num_epochs=1, steps_per_epoch=400)) == 1  # continues
    assert agent.trpo.step == 1600
    env.close()


def test_discrete_policies_take_the_number_of_actions():
    env = gym.make("CartPole-v1")
    agent = TRPOAgent(4, 2, hidden_dim=16, discrete=True, seed=1)
    history = agent.train(env, num_epochs=2, steps_per_epoch=256)
    assert len(history) == 2
    assert agent.act(np.zeros(4, dtype=np.float32)) in (0, 1)
    stats = agent.evaluate(env, episodes=2)
    assert stats["mean_return"] == stats["mean_length"] >= 8


@pytest.mark.parametrize(
    ("env_id", "arguments", "expected"),
    [
        ("Pendulum-v1", (4, 1), "state_dim = 4 does not match"),
        ("Pendulum-v1", (3, 2), "action_dim = 2 needs a Box action space of shape (2,)"),
        ("CartPole-v1", (4, 2), "Discrete(2) (use discrete=True)"),
        ("CartPole-v1", (4, 3, True), "discrete=True with action_dim = 3 needs a Discrete(3)"),
        ("Pendulum-v1", (3, 1, True), "needs a Discrete(1) action space; the env has Box"),
    ],
)
def test_the_env_is_checked_against_the_constructor(env_id, arguments, expected):
    env = gym.make(env_id)
    state_dim, action_dim, *discrete = arguments
    agent = TRPOAgent(state_dim, action_dim, discrete=bool(discrete))
    with pytest.raises(ValueError, match=re.escape(expected)):
        agent.train(env, num_epochs=1, steps_per_epoch=10)


def test_bad_settings_fail_in_the_constructor():
    with pytest.raises(rl.config.ConfigError, match="max_kl = -1"):
        TRPOAgent(3, 1, max_kl=-1)
    with pytest.raises(ValueError, match="Invalid state_dim: 0"):
        TRPOAgent(0, 1)
    with pytest.raises(RuntimeError, match="call train"):
        TRPOAgent(3, 1).act(np.zeros(3))


def test_visualize_example_plots_and_renders_headless(tmp_path):
    script = Path(__file__).parents[2] / "examples" / "visualize.py"
    env = {key: value for key, value in os.environ.items() if key != "DISPLAY"}
    result = subprocess.run(
        [sys.executable, str(script), "--demo", "--epochs", "1", "--out", str(tmp_path),
         "--max-frames", "20"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for name in ("returns.png", "Pendulum-v1.png", "Pendulum-v1.gif"):
        assert (tmp_path / name).stat().st_size > 0
    assert Image.open(tmp_path / "Pendulum-v1.gif").n_frames == 20
