"""The policy update's closure for TrustRegionOptimizer: surrogate loss and KL(old ‖ new).

This is the one place that turns a batch of experience into what the optimizer minimises;
swap the plain ``(loss, kl)`` closure for a structured (e.g. GGN) one here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from rl.policies import Policy

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


def make_policy_closure(policy: Policy, batch: PolicyBatch) -> Callable[[], tuple[Tensor, Tensor]]:
    """``closure() -> (loss, kl)`` for ``TrustRegionOptimizer.step``.

    ``loss = −mean(π(a|s) / π_old(a|s) · Â)`` (the negated surrogate advantage) and
    ``kl = mean KL(π_old(·|s) ‖ π(·|s))`` with the old distribution fixed, so that at the
    current parameters ``kl`` is 0 with zero gradient and its Hessian is the Fisher matrix.
    Deterministic and free of ``backward`` calls, as the optimizer requires.
    """
    distribution = policy.distribution

    def closure() -> tuple[Tensor, Tensor]:
        params = policy(batch.observations)
        log_ratio = distribution.log_prob(params, batch.actions) - batch.old_log_prob
        loss = -(torch.exp(log_ratio) * batch.advantages).mean()
        kl = distribution.kl(batch.old_params, params).mean()
        return loss, kl

    return closure
