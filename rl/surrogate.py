"""The policy update's closure for TrustRegionOptimizer: surrogate loss and KL(old ‖ new),
with the Gauss-Newton structure (and for a Gaussian MLP its linear output layer, solved
exactly: "ggn-head") the optimizer uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rl.policies import DiagGaussian, Policy
from trust_region import GGNClosureResult, LinearHead, functional_model

__all__ = ["PolicyBatch", "make_policy_batch", "make_policy_closure", "policy_linear_head"]


@dataclass(frozen=True)
class PolicyBatch:
    """The ``M`` valid samples of one policy update (advantages normalized if asked), with
    the distribution parameters and log-probabilities before the update."""

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


def policy_linear_head(
    policy: Policy, observations: Tensor, params: list[Tensor]
) -> LinearHead | None:
    """The ``trust_region.LinearHead`` of a DiagGaussian policy whose network is an
    ``nn.Sequential`` ending in ``nn.Linear``, ``params`` being exactly its and the log-std's
    parameters (else None). It reads the mean's precision now: build it right before the step.
    """
    distribution, network = policy.distribution, policy.network
    if not (
        isinstance(distribution, DiagGaussian)
        and type(network) is nn.Sequential  # a subclass may override forward
        and len(network) > 0
        and isinstance(network[-1], nn.Linear)
    ):
        return None
    body, head = network[:-1], network[-1]
    feature_params = list(body.parameters())
    roles = [*feature_params, head.weight, *([] if head.bias is None else [head.bias])]
    roles.append(distribution.log_std)
    if len(roles) != len(params) or {id(p) for p in roles} != {id(p) for p in params}:
        return None  # e.g. some parameters frozen or shared: the structure is not the model's
    body_fn = functional_model(body, feature_params)

    def features_fn(values: tuple[Tensor, ...], index: Tensor | None) -> Tensor:
        return body_fn(values, observations if index is None else observations[index])

    return LinearHead(
        features_fn, feature_params, head.weight, head.bias, distribution.mean_precision(),
        [(distribution.log_std, distribution.log_std_curvature)],
    )  # fmt: skip


def make_policy_closure(
    policy: Policy, batch: PolicyBatch, params: list[Tensor] | None = None
) -> Callable[[], tuple[Tensor, Tensor] | GGNClosureResult]:
    """``closure() -> (loss, kl)`` for ``TrustRegionOptimizer.step``: ``loss = −mean(ratio ·
    Â)``, ``kl = mean KL(π_old ‖ π)``. With ``params`` (the optimizer's, in its order) a
    ``GGNClosureResult`` instead (Gauss-Newton products; ``policy_linear_head`` if it applies).
    """
    distribution = policy.distribution
    observations = batch.observations
    outputs_fn = linear_head = None
    if params is not None and isinstance(policy, Policy):
        model_fn = functional_model(_GGNOutputs(policy), params)
        linear_head = policy_linear_head(policy, observations, params)

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
            loss, kl, outputs_fn, distribution.output_fisher_vp, len(observations),
            linear_head=linear_head,
        )  # fmt: skip

    return closure
