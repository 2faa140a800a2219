"""The value function: an MLP ``V(s)`` fitted to λ-returns by minibatch Adam (plain
autograd and ``torch.optim``; ``rl.value_process`` runs it beside the next rollout)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from rl.networks import mlp

if TYPE_CHECKING:
    from rl.config import ValueConfig

__all__ = ["ValueNetwork", "explained_variance", "fit_value", "make_value", "shuffled_orders"]


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


def shuffled_orders(
    num_samples: int, epochs: int, generator: torch.Generator | None, device: torch.device
) -> list[Tensor]:
    """One random permutation of the samples per epoch, drawn in epoch order."""
    return [torch.randperm(num_samples, generator=generator).to(device) for _ in range(epochs)]


def minibatch_gradients(
    value: nn.Module, parameters: list[Tensor], observations: Tensor, returns: Tensor
) -> tuple[list[Tensor | None], Tensor]:
    """The gradient of ``mean((V(x) − y)²)`` with respect to each of ``parameters`` (None
    where unused) and the loss."""
    loss = (value(observations) - returns).pow(2).mean()
    return list(torch.autograd.grad(loss, parameters, allow_unused=True)), loss.detach()


def apply_gradients(
    optimizer: torch.optim.Optimizer, parameters: list[Tensor], gradients: list[Tensor | None]
) -> None:
    """``optimizer.step()`` with ``gradients``, one per tensor of ``parameters``."""
    for parameter, gradient in zip(parameters, gradients, strict=True):
        parameter.grad = gradient
    optimizer.step()
    for parameter in parameters:
        parameter.grad = None


def fit_value(
    value: nn.Module,
    optimizer: torch.optim.Optimizer,
    observations: Tensor,
    returns: Tensor,
    epochs: int,
    minibatch_size: int,
    generator: torch.Generator | None = None,
    orders: list[Tensor] | None = None,
) -> float:
    """Minimise ``mean((V(s) − R)²)`` by ``epochs`` shuffled minibatch passes (the last,
    smaller minibatch kept; ``orders``: the permutations, else drawn from ``generator``).

    Returns the last epoch's mean minibatch loss; a fit that leaves a parameter non-finite
    is undone in place (parameters and optimizer state) and returns NaN.
    """
    undo = Snapshot(value, optimizer)
    parameters = [p for p in value.parameters() if p.requires_grad]
    num_samples = returns.shape[0]
    losses: list[Tensor] = []
    for epoch in range(epochs):
        losses = []
        order = (
            orders[epoch]
            if orders is not None
            else torch.randperm(num_samples, generator=generator).to(returns.device)
        )
        for start in range(0, num_samples, minibatch_size):
            # a fresh gather per minibatch (not slices of one shuffled copy): BLAS results
            # can depend on the alignment of their inputs
            index = order[start : start + minibatch_size]
            batch = (observations[index], returns[index])
            gradients, loss = minibatch_gradients(value, parameters, *batch)
            apply_gradients(optimizer, parameters, gradients)
            losses.append(loss)
    return undo.finish(losses)


class Snapshot:
    """``value``'s parameters and ``optimizer``'s state before a fit, to undo it."""

    def __init__(self, value: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.value, self.optimizer = value, optimizer
        self.tensors = [*value.parameters(), *_state_tensors(optimizer)]
        self.saved = [t.detach().clone() for t in self.tensors]

    def finish(self, losses: list[Tensor]) -> float:
        """Undo a fit that left a parameter non-finite (NaN); else the mean of ``losses``."""
        if not all(bool(torch.isfinite(p).all()) for p in self.value.parameters()):
            fresh = {id(t) for t in _state_tensors(self.optimizer)} - {id(t) for t in self.tensors}
            with torch.no_grad():
                for tensor, saved in zip(self.tensors, self.saved, strict=True):
                    tensor.copy_(saved)
            if fresh:  # state the fit created (a first fit): as before it, none
                for parameter in list(self.optimizer.state):
                    if any(id(t) in fresh for t in self.optimizer.state[parameter].values()):
                        del self.optimizer.state[parameter]
            return float("nan")
        return float(torch.stack(losses).mean()) if losses else float("nan")


def _state_tensors(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    states = optimizer.state.values()
    return [value for state in states for value in state.values() if isinstance(value, Tensor)]


def explained_variance(predictions: Tensor, targets: Tensor) -> float:
    """``1 − Var(targets − predictions) / Var(targets)``; NaN when the targets are constant."""
    target_variance = targets.var()
    if target_variance == 0:
        return float("nan")
    return float(1.0 - (targets - predictions).var() / target_variance)
