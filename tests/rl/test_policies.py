"""The hand-written distributions against torch.distributions, an independent reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import distributions as D

from rl.policies import make_distribution


def gaussian_reference(params):
    mean, log_std = params.chunk(2, dim=-1)
    return D.Independent(D.Normal(mean, log_std.exp()), 1)


def categorical_reference(params):
    return D.Categorical(logits=params)


def multicategorical_reference(params, nvec):
    """One torch Categorical per dimension, on its own (unpadded) logits."""
    grid = params.view(params.shape[0], len(nvec), max(nvec))
    return [D.Categorical(logits=grid[:, d, :n]) for d, n in enumerate(nvec)]


def bernoulli_reference(params):
    return D.Independent(D.Bernoulli(logits=params), 1)


def random_net_out(distribution, batch, seed):
    return torch.randn(
        batch, distribution.param_size, generator=torch.Generator().manual_seed(seed)
    )


@pytest.mark.parametrize(
    ("space", "reference"),
    [
        (spaces.Box(-1.0, 1.0, (3,), np.float32), gaussian_reference),
        (spaces.Discrete(5), categorical_reference),
        (spaces.MultiBinary(4), bernoulli_reference),
    ],
    ids=["gaussian", "categorical", "bernoulli"],
)
def test_log_prob_kl_entropy_match_torch_distributions(space, reference):
    distribution = make_distribution(space, log_std_init=-0.3).double()
    old = distribution.params(random_net_out(distribution, 64, 0).double())
    if isinstance(space, spaces.Box):
        distribution.log_std.data = torch.randn(3, dtype=torch.float64)
    new = distribution.params(random_net_out(distribution, 64, 1).double())
    actions = reference(old).sample()
    torch.testing.assert_close(
        distribution.log_prob(old, actions), reference(old).log_prob(actions)
    )
    torch.testing.assert_close(
        distribution.kl(old, new), D.kl_divergence(reference(old), reference(new))
    )
    torch.testing.assert_close(distribution.entropy(new), reference(new).entropy())


def test_multicategorical_matches_independent_categoricals():
    nvec = [3, 5, 2]
    distribution = make_distribution(spaces.MultiDiscrete(nvec)).double()
    old = distribution.params(random_net_out(distribution, 32, 0).double())
    new = distribution.params(random_net_out(distribution, 32, 1).double())
    old_ref = multicategorical_reference(old, nvec)
    new_ref = multicategorical_reference(new, nvec)
    actions = torch.stack([d.sample() for d in old_ref], dim=1)
    expected_log_prob = sum(d.log_prob(actions[:, i]) for i, d in enumerate(old_ref))
    expected_kl = sum(D.kl_divergence(o, n) for o, n in zip(old_ref, new_ref, strict=True))
    expected_entropy = sum(d.entropy() for d in new_ref)
    torch.testing.assert_close(distribution.log_prob(old, actions), expected_log_prob)
    torch.testing.assert_close(distribution.kl(old, new), expected_kl)
    torch.testing.assert_close(distribution.entropy(new), expected_entropy)


@pytest.mark.parametrize(
    "space",
    [
        spaces.Box(-1.0, 1.0, (2,), np.float32),
        spaces.Discrete(4),
        spaces.MultiDiscrete([2, 4]),
        spaces.MultiBinary(3),
    ],
    ids=["gaussian", "categorical", "multicategorical", "bernoulli"],
)
def test_kl_is_zero_with_zero_gradient_at_the_old_parameters(space):
    distribution = make_distribution(space).double()
    net_out = random_net_out(distribution, 16, 0).double().requires_grad_()
    params = distribution.params(net_out)
    kl = distribution.kl(params.detach(), params).mean()
    (gradient,) = torch.autograd.grad(kl, net_out)
    assert abs(kl.item()) < 1e-12
    assert gradient.abs().max().item() < 1e-12


@pytest.mark.parametrize(
    "space",
    [spaces.Discrete(3), spaces.MultiDiscrete([3, 3]), spaces.MultiBinary(2)],
    ids=["categorical", "multicategorical", "bernoulli"],
)
def test_sampling_frequencies_follow_the_probabilities(space):
    distribution = make_distribution(space)
    net_out = torch.tensor([[1.0, -0.5, 0.3, 0.0, 2.0, -1.0][: distribution.param_size]])
    params = distribution.params(net_out)
    samples = distribution.act(net_out.expand(40_000, -1), False, torch.Generator().manual_seed(0))
    grid = torch.cartesian_prod(*[torch.arange(n) for n in _choices(space)]).reshape(
        -1, *distribution.action_shape
    )
    grid = grid.to(distribution.action_dtype)
    probabilities = distribution.log_prob(params.expand(len(grid), -1), grid).exp()
    assert probabilities.sum().item() == pytest.approx(1.0, abs=1e-6)
    flat_samples = samples.reshape(len(samples), 1, -1)
    flat_grid = grid.reshape(1, len(grid), -1)
    frequencies = (flat_samples == flat_grid).all(-1).float().mean(0)
    torch.testing.assert_close(frequencies, probabilities, atol=0.01, rtol=0)


def _choices(space):
    if isinstance(space, spaces.Discrete):
        return [int(space.n)]
    if isinstance(space, spaces.MultiDiscrete):
        return [int(n) for n in space.nvec]
    return [2] * int(space.n)


def test_discrete_start_offset_reaches_the_env():
    distribution = make_distribution(spaces.Discrete(3, start=-1))
    assert distribution.to_env(torch.tensor([0, 1, 2])).tolist() == [-1, 0, 1]
    multi = make_distribution(spaces.MultiDiscrete([2, 3], start=[5, 10]))
    assert multi.to_env(torch.tensor([[1, 2]])).tolist() == [[6, 12]]


def test_deterministic_actions_are_the_modes():
    gaussian = make_distribution(spaces.Box(-1.0, 1.0, (2,), np.float32))
    mean = torch.tensor([[0.3, -0.2]])
    assert torch.equal(gaussian.act(mean, True, None), mean)
    categorical = make_distribution(spaces.Discrete(3))
    assert categorical.act(torch.tensor([[0.1, 2.0, -1.0]]), True, None).tolist() == [1]
    bernoulli = make_distribution(spaces.MultiBinary(3))
    assert bernoulli.act(torch.tensor([[0.5, -0.5, 3.0]]), True, None).tolist() == [[1, 0, 1]]


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "silu"])
def test_fast_forward_gives_the_networks_numbers_bit_for_bit(activation: str) -> None:
    from rl.networks import fast_forward, mlp

    torch.manual_seed(0)
    network = mlp(5, (16, 16), 3, activation)
    forward = fast_forward(network)
    assert forward is not network
    x = torch.randn(2, 5)
    with torch.no_grad():
        assert torch.equal(forward(x), network(x))
        for p in network.parameters():  # in-place updates are seen
            p.add_(0.1)
        assert torch.equal(forward(x), network(x))
    other = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Dropout())
    assert fast_forward(other) is other


@pytest.mark.parametrize(
    "space",
    [spaces.Box(-1.0, 1.0, (3,), np.float32), spaces.Discrete(4), spaces.MultiDiscrete([2, 3]),
     spaces.MultiBinary(3)],
)  # fmt: skip
def test_the_rollout_sampler_draws_what_act_draws(space) -> None:
    distribution = make_distribution(space, log_std_init=-0.3)
    net_out = random_net_out(distribution, 5, seed=1)
    one, two = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    sample = distribution.sampler(one)
    with torch.no_grad():
        for _ in range(3):
            assert torch.equal(sample(net_out), distribution.act(net_out, False, two))


def test_clipping_to_float32_bounds_gives_float64_clipping_cast_to_float32() -> None:
    # the space's bounds are float32; the old code clipped to them as float64, then cast
    low = np.array([-0.4, -3.3, 0.1], np.float32).astype(np.float64)
    high = np.array([0.4, 2.2, 0.7], np.float32).astype(np.float64)
    gaussian = make_distribution(
        spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
    )
    generator = torch.Generator().manual_seed(0)
    actions = torch.randn(20_000, 3, generator=generator) * 3
    edges = torch.tensor(np.stack([low, high]).astype(np.float32))
    actions = torch.cat([actions, edges, edges.nextafter(edges + 1), edges.nextafter(edges - 1)])
    got = gaussian.to_env(actions)
    want = np.clip(actions.numpy().astype(np.float64), low, high).astype(np.float32)
    assert got.dtype == np.float32 and np.array_equal(got, want)
