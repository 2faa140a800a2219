"""The policy update's closure for TrustRegionOptimizer: surrogate loss and KL(old ‖ new).

This is the one place that turns a batch of experience into what the optimizer minimises;
swap the plain ``(loss, kl)`` closure for a structured (e.g. GGN) one here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rl.policies import Policy
from trust_region import GGNClosureResult, functional_model

__all__ = ["PolicyBatch", "make_policy_batch", "make_policy_closure"]


@dataclass(frozen=True)
class PolicyBatch:
    """The samples of one policy update, flattened over time and envs (``M`` valid slots).

    Attributes:
        observations (Tensor): ``(M, obs_dim)``.
        actions (Tensor): ``(M, *action_shape)``.
        advantages (Tensor): ``(M,)``, already normalized if the config asks for it.
        old_params (Tensor): ``(M, P)`` distribution parameters before the update, detached.
        old_log_prob (Tensor): ``(M,)`` log-probabilities of ``actions`` before the update.
    """

    observations: Tensor
    actions: Tensor
    advantages: Tensor
    old_params: Tensor
    old_log_prob: Tensor


def make_policy_batch(
    policy: Policy, observations: Tensor, actions: Tensor, advantages: Tensor
) -> PolicyBatch:
    """Evaluate the current (old) policy once on the batch; the result is held fixed."""
    with torch.no_grad():
        old_params = policy(observations)
        old_log_prob = policy.distribution.log_prob(old_params, actions)
    return PolicyBatch(observations, actions, advantages, old_params, old_log_prob)


class _GGNOutputs(nn.Module):
    """Adapter so that ``torch.func.functional_call`` runs ``Policy.ggn_outputs``."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, observations: Tensor) -> Tensor:
        return self.policy.ggn_outputs(observations)


def make_policy_closure(
    policy: Policy, batch: PolicyBatch, params: list[Tensor] | None = None
) -> Callable[[], tuple[Tensor, Tensor] | GGNClosureResult]:
    """``closure() -> (loss, kl)`` for ``TrustRegionOptimizer.step``.

    With ``params`` (the optimizer's parameters, in its order) and a :class:`Policy` whose
    distribution gives its output-space Fisher, the closure returns a
    :class:`trust_region.GGNClosureResult` instead, enabling the Gauss-Newton Fisher products
    and ``fvp_subsample``.

    ``loss = −mean(π(a|s) / π_old(a|s) · Â)`` (the negated surrogate advantage) and
    ``kl = mean KL(π_old(·|s) ‖ π(·|s))`` with the old distribution fixed, so that at the
    current parameters ``kl`` is 0 with zero gradient and its Hessian is the Fisher matrix.
    Deterministic and free of ``backward`` calls, as the optimizer requires.
    """
    distribution = policy.distribution
    observations = batch.observations
    outputs_fn = None
    if params is not None and isinstance(policy, Policy):
        model_fn = functional_model(_GGNOutputs(policy), params)

        def outputs_fn(values: tuple[Tensor, ...], index: Tensor | None) -> Tensor:
            return model_fn(values, observations if index is None else observations[index])

    def closure() -> tuple[Tensor, Tensor] | GGNClosureResult:
        dist_params = policy(observations)
        log_ratio = distribution.log_prob(dist_params, batch.actions) - batch.old_log_prob
        loss = -(torch.exp(log_ratio) * batch.advantages).mean()
        kl = distribution.kl(batch.old_params, dist_params).mean()
        if outputs_fn is None:
            return loss, kl
        return GGNClosureResult(
            loss, kl, outputs_fn, distribution.output_fisher_vp, len(observations)
        )

    return closure
