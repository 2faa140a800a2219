"""The value function: an MLP ``V(s)`` fitted to λ-returns by minibatch Adam."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from rl.config import ValueConfig
from rl.networks import mlp

__all__ = [
    "BackgroundCall",
    "ForegroundCall",
    "ValueNetwork",
    "explained_variance",
    "fit_value",
    "make_value",
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

    A fit that leaves a parameter NaN or infinite (finite but huge observations or returns
    can overflow float32) is undone: the parameters and the optimizer's state are restored.

    Returns:
        float: the mean minibatch loss of the last epoch; NaN if the fit was undone.
    """
    saved_parameters = [p.detach().clone() for p in value.parameters()]
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
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
    if not all(bool(torch.isfinite(p).all()) for p in value.parameters()):
        with torch.no_grad():
            for parameter, saved in zip(value.parameters(), saved_parameters, strict=True):
                parameter.copy_(saved)
        optimizer.load_state_dict(saved_optimizer)
        return float("nan")
    return float(torch.stack(losses).mean()) if losses else float("nan")


def explained_variance(predictions: Tensor, targets: Tensor) -> float:
    """``1 − Var(targets − predictions) / Var(targets)``; NaN when the targets are constant."""
    target_variance = targets.var()
    if target_variance == 0:
        return float("nan")
    return float(1.0 - (targets - predictions).var() / target_variance)


class BackgroundCall:
    """Runs ``fn(*args)`` in a thread at once; ``result()`` waits and returns (or raises).

    The TRPO update fits the value function this way while the policy step runs: they share
    no state (the fit has its own shuffle generator), so the outcome is bit for bit the one of
    running them one after the other; torch releases the GIL inside its kernels.
    """

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            self._result = fn(*args)
        except BaseException as error:  # re-raised in the caller's thread by result()
            self._error = error

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


class ForegroundCall:
    """``BackgroundCall``'s synchronous stand-in: runs ``fn(*args)`` in the caller's thread."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._result = fn(*args)

    def result(self) -> Any:
        return self._result
