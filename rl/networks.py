"""Multilayer perceptrons for the policy and the value function."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["ACTIVATIONS", "check_device_available", "mlp"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def mlp(
    in_features: int,
    hidden_sizes: Sequence[int],
    out_features: int,
    activation: str = "tanh",
    ortho_init: bool = True,
    output_gain: float = 1.0,
) -> nn.Sequential:
    """An MLP ``in -> hidden... -> out``, ``activation`` (an ``ACTIVATIONS`` key) between
    layers; ``ortho_init``: orthogonal weights (gain √2, ``output_gain`` last), zero biases."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"Invalid activation: {activation!r} (allowed: {', '.join(ACTIVATIONS)})")
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden_sizes:
        layers += [_linear(width, size, ortho_init, math.sqrt(2.0)), ACTIVATIONS[activation]()]
        width = size
    layers.append(_linear(width, out_features, ortho_init, output_gain))
    return nn.Sequential(*layers)


def fast_forward(network: nn.Module) -> Callable[[Tensor], Tensor]:
    """A leaner ``network(x)`` for the rollout, the same numbers: for an ``mlp`` it chains
    ``torch.addmm`` (as ``F.linear`` on 2-D inputs) and the activations, skipping
    ``Module.__call__`` (docs/rollout_costs.md), on views of the live parameters (in-place
    updates seen). Any other network is returned as it is."""
    if not isinstance(network, nn.Sequential) or not all(
        (isinstance(layer, nn.Linear) and layer.bias is not None) or type(layer) in _ELEMENTWISE
        for layer in network
    ):
        return network
    steps: list[Callable[[Tensor], Tensor]] = []
    for layer in network:
        if isinstance(layer, nn.Linear):
            # the transposed weight as a view made once: it follows in-place updates
            steps.append(functools.partial(_addmm, layer.weight.t(), layer.bias))
        else:
            steps.append(_ELEMENTWISE[type(layer)])

    def forward(x: Tensor) -> Tensor:
        if x.dim() != 2:
            return network(x)
        for step in steps:
            x = step(x)
        return x

    return forward


def _addmm(weight_t: Tensor, bias: Tensor, x: Tensor) -> Tensor:
    return torch.addmm(bias, x, weight_t)


_ELEMENTWISE: dict[type, Callable[[Tensor], Tensor]] = {
    nn.Tanh: torch.tanh,
    nn.ReLU: torch.relu,
    nn.ELU: F.elu,
    nn.SiLU: F.silu,
}


def _linear(in_features: int, out_features: int, ortho_init: bool, gain: float) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    if ortho_init:
        nn.init.orthogonal_(layer.weight, gain=gain)
        nn.init.zeros_(layer.bias)
    return layer


def check_device_available(device: torch.device) -> None:
    """A one-line ValueError (``device = ...``) when this machine cannot run on ``device``."""
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = "a CPU-only build" if torch.version.cuda is None else "no GPU visible"
            raise ValueError(
                f"device = {str(device)!r}: this torch ({torch.__version__}) has {build}; use "
                "device=cpu (trpo eval/export --device cpu, or device in the run's config.yaml)"
            )
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device = {str(device)!r}: only {count} GPU(s) visible (cuda:0 to "
                f"cuda:{count - 1})"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device = {str(device)!r}: MPS is not available on this machine")
