"""rl.gae against a plain Python loop, hand-computed arrays and the infinite-horizon case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rl import gae


def reference_gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """The issue's definition, one scalar at a time, in Python floats."""
    steps, envs = len(rewards), len(rewards[0])
    advantages = [[0.0] * envs for _ in range(steps)]
    for i in range(envs):
        following = 0.0
        for t in reversed(range(steps)):
            bootstrap = 0.0 if terminated[t][i] else gamma * next_values[t][i]
            delta = rewards[t][i] + bootstrap - values[t][i]
            done = terminated[t][i] or truncated[t][i]
            following = delta + (0.0 if done else gamma * lam * following)
            advantages[t][i] = following
    returns = [[advantages[t][i] + values[t][i] for i in range(envs)] for t in range(steps)]
    return advantages, returns


def random_batch(seed, steps, envs, dtype, termination_rate, truncation_rate):
    generator = np.random.default_rng(seed)
    rewards = generator.normal(size=(steps, envs))
    values = generator.normal(size=(steps, envs))
    next_values = generator.normal(size=(steps, envs))
    terminated = generator.random((steps, envs)) < termination_rate
    truncated = generator.random((steps, envs)) < truncation_rate
    as_tensor = lambda array: torch.tensor(array, dtype=dtype)  # noqa: E731
    return (
        as_tensor(rewards),
        as_tensor(values),
        as_tensor(next_values),
        torch.tensor(terminated),
        torch.tensor(truncated),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("termination_rate", "truncation_rate"),
    [(0.0, 0.0), (0.0, 0.2), (0.2, 0.0), (0.2, 0.2)],
    ids=["no-ends", "truncation-only", "termination-only", "both"],
)
def test_gae_matches_python_loop(dtype, termination_rate, truncation_rate):
    batch = random_batch(0, 37, 5, dtype, termination_rate, truncation_rate)
    advantages, returns = gae(*batch, gamma=0.97, lam=0.9)
    expected_advantages, expected_returns = reference_gae(
        *(x.tolist() for x in batch), gamma=0.97, lam=0.9
    )
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    assert advantages.dtype == dtype and returns.dtype == dtype
    expected = torch.tensor(expected_advantages, dtype=torch.float64)
    torch.testing.assert_close(advantages.double(), expected, rtol=tolerance, atol=tolerance)
    expected = torch.tensor(expected_returns, dtype=torch.float64)
    torch.testing.assert_close(returns.double(), expected, rtol=tolerance, atol=tolerance)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    steps=st.integers(1, 12),
    envs=st.integers(1, 4),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
)
def test_gae_matches_python_loop_for_any_shape_and_coefficients(seed, steps, envs, gamma, lam):
    batch = random_batch(seed, steps, envs, torch.float64, 0.3, 0.3)
    advantages, _ = gae(*batch, gamma=gamma, lam=lam)
    expected, _ = reference_gae(*(x.tolist() for x in batch), gamma=gamma, lam=lam)
    torch.testing.assert_close(advantages, torch.tensor(expected, dtype=torch.float64))


def test_hand_computed_rows_with_truncation_termination_and_both():
    # one env per column; gamma = 0.5, lam = 0.5 so that the numbers stay exact
    rewards = torch.tensor([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    values = torch.tensor([[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]])
    next_values = torch.tensor([[4.0, 4.0, 4.0], [8.0, 8.0, 8.0]])
    # column 0: truncated at t=0; column 1: terminated at t=0; column 2: no end, then both
    terminated = torch.tensor([[False, True, False], [False, False, True]])
    truncated = torch.tensor([[True, False, False], [False, False, True]])
    advantages, returns = gae(rewards, values, next_values, terminated, truncated, 0.5, 0.5)
    # t=1: col0/col1 bootstrap 0.5*8 = 4 -> delta 2+4-1 = 5; col2 terminated -> 2-1 = 1
    # t=0: col0 truncated: 1+0.5*4-0.5 = 2.5, chain cut; col1 terminated: 1-0.5 = 0.5;
    #      col2: delta 1+2-0.5 = 2.5, plus 0.25 * A_1 (1) = 2.75
    assert advantages.tolist() == [[2.5, 0.5, 2.75], [5.0, 5.0, 1.0]]
    assert returns.tolist() == [[3.0, 1.0, 3.25], [6.0, 6.0, 2.0]]


def test_truncation_bootstraps_so_a_perfect_value_has_zero_advantage():
    """Constant reward 1 forever, cut by time limits: V = 1/(1-γ) everywhere is exact, so every
    advantage must vanish; treating truncation as termination would make them -γ/(1-γ)."""
    gamma, steps, envs = 0.9, 50, 3
    value = 1.0 / (1.0 - gamma)
    rewards = torch.ones(steps, envs, dtype=torch.float64)
    values = torch.full_like(rewards, value)
    truncated = torch.zeros(steps, envs, dtype=torch.bool)
    truncated[9::10, 0] = True
    truncated[6::7, 1] = True
    advantages, returns = gae(
        rewards, values, values, torch.zeros_like(truncated), truncated, gamma, 0.95
    )
    torch.testing.assert_close(advantages, torch.zeros_like(advantages))
    torch.testing.assert_close(returns, values)


def test_torch_path_under_autograd_matches_and_differentiates():
    """The recursion runs on NumPy views on CPU and on tensors when autograd records."""
    rewards, values, next_values, terminated, truncated = random_batch(
        1, 20, 3, torch.float64, 0.2, 0.2
    )
    plain, _ = gae(rewards, values, next_values, terminated, truncated, 0.9, 0.8)
    rewards.requires_grad_()
    recorded, _ = gae(rewards, values, next_values, terminated, truncated, 0.9, 0.8)
    torch.testing.assert_close(recorded.detach(), plain)
    (gradient,) = torch.autograd.grad(recorded[0, 0], rewards)
    # A_0 = Σ_k (γλ)^k δ_k until the first done; δ_k depends on r_k with weight 1
    assert gradient[0, 0].item() == 1.0 and gradient[:, 1:].abs().sum().item() == 0.0


def test_termination_does_not_bootstrap():
    rewards = torch.ones(1, 1)
    values = torch.zeros(1, 1)
    next_values = torch.full((1, 1), 100.0)
    done = torch.ones(1, 1, dtype=torch.bool)
    not_done = torch.zeros(1, 1, dtype=torch.bool)
    terminated_adv, _ = gae(rewards, values, next_values, done, not_done, 0.9, 0.95)
    truncated_adv, _ = gae(rewards, values, next_values, not_done, done, 0.9, 0.95)
    assert terminated_adv.item() == 1.0
    assert truncated_adv.item() == pytest.approx(91.0)


def test_last_row_has_nothing_after_it():
    rewards = torch.zeros(3, 1)
    values = torch.zeros(3, 1)
    next_values = torch.tensor([[0.0], [0.0], [10.0]])
    never = torch.zeros(3, 1, dtype=torch.bool)
    advantages, _ = gae(rewards, values, next_values, never, never, gamma=1.0, lam=1.0)
    assert advantages.squeeze(1).tolist() == [10.0, 10.0, 10.0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rewards": torch.zeros(4)}, "rewards must be"),
        ({"values": torch.zeros(4, 2, dtype=torch.float64)}, "values must match"),
        ({"next_values": torch.zeros(3, 2)}, "next_values must match"),
        ({"terminated": torch.zeros(4, 2)}, "terminated must be a bool"),
        ({"truncated": torch.zeros(4, 3, dtype=torch.bool)}, "truncated must be a bool"),
        ({"gamma": 1.5}, "Invalid gamma: 1.5"),
        ({"lam": -0.1}, "Invalid lam: -0.1"),
    ],
)
def test_bad_inputs_are_named(change, message):
    arguments = {
        "rewards": torch.zeros(4, 2),
        "values": torch.zeros(4, 2),
        "next_values": torch.zeros(4, 2),
        "terminated": torch.zeros(4, 2, dtype=torch.bool),
        "truncated": torch.zeros(4, 2, dtype=torch.bool),
        "gamma": 0.99,
        "lam": 0.95,
    } | change
    with pytest.raises(ValueError, match=message):
        gae(**arguments)
