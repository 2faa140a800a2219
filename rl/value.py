"""The value function: an MLP ``V(s)`` fitted to λ-returns by minibatch Adam.

``fit_value`` is plain autograd and ``torch.optim``; ``rl.value_process`` runs it in a
child process beside the next rollout.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rl.config import ValueConfig
from rl.networks import mlp

__all__ = [
    "ValueNetwork",
    "explained_variance",
    "fit_value",
    "make_value",
    "shuffled_orders",
]


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
        orders (list of Tensor, optional): the ``epochs`` permutations to use instead of
            drawing them from ``generator`` (``shuffled_orders``).

    A fit that leaves a parameter NaN or infinite (finite but huge observations or returns
    can overflow float32) is undone: the parameters and the optimizer's state are restored,
    in place (a value network in shared memory stays there).

    Returns:
        float: the mean minibatch loss of the last epoch; NaN if the fit was undone.
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
    """The parameters of ``value`` and the state of ``optimizer`` before a fit, to undo a
    fit that leaves a parameter NaN or infinite (``finish``)."""

    def __init__(self, value: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.value, self.optimizer = value, optimizer
        self.tensors = [*value.parameters(), *_state_tensors(optimizer)]
        self.saved = [t.detach().clone() for t in self.tensors]

    def finish(self, losses: list[Tensor]) -> float:
        """Undo the fit (in place) if it left a parameter non-finite and return NaN; else
        the mean of the last epoch's minibatch ``losses``."""
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
    return [
        value
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, Tensor)
    ]


def explained_variance(predictions: Tensor, targets: Tensor) -> float:
    """``1 − Var(targets − predictions) / Var(targets)``; NaN when the targets are constant."""
    target_variance = targets.var()
    if target_variance == 0:
        return float("nan")
    return float(1.0 - (targets - predictions).var() / target_variance)
