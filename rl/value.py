"""The value function: an MLP ``V(s)`` fitted to λ-returns by minibatch Adam."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rl.config import ValueConfig
from rl.networks import mlp

__all__ = ["ValueNetwork", "explained_variance", "fit_value", "make_value"]


class ValueNetwork(nn.Module):
    """``(B, obs_dim) -> (B,)``: an MLP with one output, squeezed."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, observations: Tensor) -> Tensor:
        return self.network(observations).squeeze(-1)


def make_value(obs_dim: int, config: ValueConfig) -> ValueNetwork:
    """The MLP value network described by ``config`` (output layer gain 1, as SB3)."""
    return ValueNetwork(mlp(obs_dim, config.hidden_sizes, 1, config.activation, True, 1.0))


def fit_value(
    value: nn.Module,
    optimizer: torch.optim.Optimizer,
    observations: Tensor,
    returns: Tensor,
    epochs: int,
    minibatch_size: int,
    generator: torch.Generator | None = None,
) -> float:
    """Regress ``value(observations)`` on ``returns`` by ``epochs`` shuffled minibatch passes.

    Minimises ``mean((V(s) − R)²)`` with ``optimizer``; a last minibatch smaller than
    ``minibatch_size`` is kept.

    Args:
        value (nn.Module): ``(B, obs_dim) -> (B,)``.
        optimizer (Optimizer): over ``value``'s parameters (e.g. Adam).
        observations (Tensor): ``(M, obs_dim)``.
        returns (Tensor): ``(M,)`` regression targets.
        epochs (int): passes over the data.
        minibatch_size (int): samples per optimizer step.
        generator (torch.Generator, optional): shuffling randomness.

    Returns:
        float: the mean minibatch loss of the last epoch.
    """
    num_samples = returns.shape[0]
    losses = []
    for _ in range(epochs):
        losses = []
        order = torch.randperm(num_samples, generator=generator).to(returns.device)
        for start in range(0, num_samples, minibatch_size):
            index = order[start : start + minibatch_size]
            loss = (value(observations[index]) - returns[index]).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
    return float(torch.stack(losses).mean()) if losses else float("nan")


def explained_variance(predictions: Tensor, targets: Tensor) -> float:
    """``1 − Var(targets − predictions) / Var(targets)``; NaN when the targets are constant."""
    target_variance = targets.var()
    if target_variance == 0:
        return float("nan")
    return float(1.0 - (targets - predictions).var() / target_variance)
