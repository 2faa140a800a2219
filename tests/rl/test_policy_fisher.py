"""The policy's Gauss-Newton Fisher products equal the Hessian of its KL, per action space."""

import dataclasses

import numpy as np
import pytest
import torch
from gymnasium import spaces

from rl.config import PolicyConfig
from rl.policies import make_policy
from rl.surrogate import make_policy_batch, make_policy_closure
from trust_region import GGNClosureResult, TrustRegionOptimizer, ggn_vector_product
from trust_region.curvature import hessian_vector_product

SPACES = [
    spaces.Box(-1.0, 1.0, (3,), np.float32),
    spaces.Discrete(4),
    spaces.MultiDiscrete([2, 4, 3]),
    spaces.MultiBinary(3),
]


def policy_and_batch(space: spaces.Space, seed: int = 0):
    torch.manual_seed(seed)
    policy = make_policy(5, space, PolicyConfig(hidden_sizes=(8,), ortho_init=False)).double()
    with torch.no_grad():  # make the outputs non-trivial (ortho init would shrink them)
        for p in policy.parameters():
            p.normal_(0.0, 0.5)
    observations = torch.randn(32, 5, dtype=torch.float64)
    actions = policy.act(observations).to(policy.distribution.action_dtype)
    if actions.dtype.is_floating_point:
        actions = actions.double()
    advantages = torch.randn(32, dtype=torch.float64)
    return policy, make_policy_batch(policy, observations, actions, advantages)


@pytest.mark.parametrize("space", SPACES, ids=lambda s: type(s).__name__)
def test_ggn_closure_products_equal_the_kl_hessian(space: spaces.Space) -> None:
    policy, batch = policy_and_batch(space)
    params = list(policy.parameters())
    result = make_policy_closure(policy, batch, params)()
    assert isinstance(result, GGNClosureResult)
    hessian = hessian_vector_product(result.kl, params)
    ggn = ggn_vector_product(
        result.outputs_fn, result.output_fisher_vp, params, None, result.num_samples
    )
    size = sum(p.numel() for p in params)
    for seed in range(3):
        v = torch.randn(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        expected = hessian(v)
        assert expected.norm() > 1e-3  # a real curvature, not two zeros agreeing
        torch.testing.assert_close(ggn(v), expected, rtol=1e-6, atol=1e-9)


def without_linear_head(closure):
    """The plain Gauss-Newton closure: a Gaussian policy's also describes its linear head,
    which switches the optimizer to "ggn-head" (tested in test_policy_head.py)."""

    def plain():
        result = closure()
        if isinstance(result, GGNClosureResult):
            return dataclasses.replace(result, linear_head=None)
        return result

    return plain


@pytest.mark.parametrize("space", SPACES, ids=lambda s: type(s).__name__)
def test_policy_step_is_the_same_in_both_fisher_modes(space: spaces.Space) -> None:
    steps = []
    for fvp in ("hessian", "ggn"):
        policy, batch = policy_and_batch(space, seed=1)
        params = list(policy.parameters())
        opt = TrustRegionOptimizer(params, max_kl=0.01, fvp=fvp, cg_iters=20)
        closure = make_policy_closure(policy, batch, None if fvp == "hessian" else params)
        result = opt.step(without_linear_head(closure))
        assert result.fvp == fvp
        steps.append(torch.cat([p.detach().flatten() for p in policy.parameters()]))
    torch.testing.assert_close(steps[0], steps[1], rtol=1e-7, atol=1e-9)
