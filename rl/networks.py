"""Multilayer perceptrons for the policy and the value function."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

__all__ = ["ACTIVATIONS", "mlp"]

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
    """An MLP ``in -> hidden... -> out`` with ``activation`` between layers (none at the end).

    Args:
        in_features (int): input width.
        hidden_sizes (sequence of int): hidden widths; empty gives one linear layer.
        out_features (int): output width.
        activation (str, optional): a key of ``ACTIVATIONS`` (default: ``"tanh"``).
        ortho_init (bool, optional): orthogonal weights with gain √2 on hidden layers and
            ``output_gain`` on the last, zero biases, as SB3/baselines do (default: True).
        output_gain (float, optional): gain of the output layer (default: 1.0).

    Example:
        >>> mlp(4, (64, 64), 2)(torch.zeros(3, 4)).shape  # doctest: +SKIP
        torch.Size([3, 2])
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"Invalid activation: {activation!r} (allowed: {', '.join(ACTIVATIONS)})")
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden_sizes:
        layers += [_linear(width, size, ortho_init, math.sqrt(2.0)), ACTIVATIONS[activation]()]
        width = size
    layers.append(_linear(width, out_features, ortho_init, output_gain))
    return nn.Sequential(*layers)


def _linear(in_features: int, out_features: int, ortho_init: bool, gain: float) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    if ortho_init:
        nn.init.orthogonal_(layer.weight, gain=gain)
        nn.init.zeros_(layer.bias)
    return layer
