"""A Gaussian MLP policy's closure describes its linear output layer; the head-eliminated step
("ggn-head") is the Hessian-mode step."""

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from rl.config import PolicyConfig
from rl.policies import Policy, make_distribution, make_policy
from rl.surrogate import make_policy_batch, make_policy_closure, policy_linear_head
from trust_region import GGNClosureResult, TrustRegionOptimizer, linear_head_fisher_product
from trust_region.curvature import hessian_vector_product

BOX = spaces.Box(-1.0, 1.0, (3,), np.float32)


def policy_and_batch(space: spaces.Space = BOX, seed: int = 0, hidden_sizes=(8, 8)):
    torch.manual_seed(seed)
    config = PolicyConfig(hidden_sizes=hidden_sizes, ortho_init=False, log_std_init=-0.7)
    policy = make_policy(5, space, config).double()
    observations = torch.randn(64, 5, dtype=torch.float64)
    actions = policy.act(observations).to(policy.distribution.action_dtype)
    if actions.dtype.is_floating_point:
        actions = actions.double()
    advantages = torch.randn(64, dtype=torch.float64)
    return policy, make_policy_batch(policy, observations, actions, advantages)


@pytest.mark.parametrize("hidden_sizes", [(8, 8), ()], ids=["mlp", "linear"])
def test_gaussian_policy_closure_describes_its_linear_head(hidden_sizes) -> None:
    policy, batch = policy_and_batch(hidden_sizes=hidden_sizes)
    params = list(policy.parameters())
    result = make_policy_closure(policy, batch, params)()
    assert isinstance(result, GGNClosureResult) and result.linear_head is not None
    hessian = hessian_vector_product(result.kl, params)
    head = linear_head_fisher_product(result.linear_head, params)
    size = sum(p.numel() for p in params)
    for seed in range(3):
        v = torch.randn(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        torch.testing.assert_close(head(v), hessian(v), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("fvp_subsample", [1.0, 0.5])
def test_gaussian_policy_step_in_head_mode_is_the_hessian_step(fvp_subsample: float) -> None:
    steps, results = [], []
    for fvp in ("hessian", "auto"):
        policy, batch = policy_and_batch(seed=1)
        params = list(policy.parameters())
        opt = TrustRegionOptimizer(params, max_kl=0.01, fvp=fvp, cg_iters=200, cg_tol=0.0)
        closure = make_policy_closure(policy, batch, None if fvp == "hessian" else params)
        if fvp == "auto":
            opt.param_groups[0]["fvp_subsample"] = fvp_subsample
        results.append(opt.step(closure))
        steps.append(torch.cat([p.detach().flatten() for p in policy.parameters()]))
    assert [r.fvp for r in results] == ["hessian", "ggn-head"]
    assert all(r.accepted for r in results)
    if fvp_subsample == 1.0:
        torch.testing.assert_close(steps[1], steps[0], rtol=1e-8, atol=1e-10)
    else:  # a different metric (half the batch), the same trust region: KL measured exactly
        assert results[1].kl <= 0.01 * (1 + 1e-6)


@pytest.mark.parametrize(
    "space",
    [spaces.Discrete(4), spaces.MultiDiscrete([2, 3]), spaces.MultiBinary(3)],
    ids=lambda s: type(s).__name__,
)
def test_other_action_spaces_keep_the_plain_ggn_products(space: spaces.Space) -> None:
    policy, batch = policy_and_batch(space)
    params = list(policy.parameters())
    result = make_policy_closure(policy, batch, params)()
    assert isinstance(result, GGNClosureResult) and result.linear_head is None
    opt = TrustRegionOptimizer(params, max_kl=0.01)
    assert opt.step(make_policy_closure(policy, batch, params)).fvp == "ggn"


def test_networks_that_do_not_end_in_a_linear_layer_keep_the_plain_ggn_products() -> None:
    distribution = make_distribution(BOX)
    squashed = Policy(nn.Sequential(nn.Linear(5, 3), nn.Tanh()), distribution).double()
    observations = torch.randn(16, 5, dtype=torch.float64)
    assert policy_linear_head(squashed, observations, list(squashed.parameters())) is None


def test_a_partial_parameter_list_keeps_the_plain_ggn_products() -> None:
    policy, batch = policy_and_batch()
    network_only = list(policy.network.parameters())  # log_std left out of the optimizer
    assert policy_linear_head(policy, batch.observations, network_only) is None


def test_float32_policy_steps_in_head_mode() -> None:
    policy, batch = policy_and_batch(seed=2)
    policy.float()
    batch = make_policy_batch(
        policy, batch.observations.float(), batch.actions.float(), batch.advantages.float()
    )
    params = list(policy.parameters())
    opt = TrustRegionOptimizer(params, max_kl=0.01, cg_iters=10)
    for _ in range(3):
        batch = make_policy_batch(policy, batch.observations, batch.actions, batch.advantages)
        result = opt.step(make_policy_closure(policy, batch, params))
        assert result.fvp == "ggn-head" and result.accepted
        assert result.kl <= 0.01 * (1 + 1e-6)
