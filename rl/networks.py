"""Multilayer perceptrons for the policy and the value function."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

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


def fast_forward(network: nn.Module) -> Callable[[Tensor], Tensor]:
    """A leaner ``network(x)`` for the per-step rollout forward, the same numbers.

    For an ``nn.Sequential`` of ``nn.Linear`` and element-wise activations (what :func:`mlp`
    builds) it chains ``torch.addmm`` (what ``F.linear`` runs for 2-D inputs) and the
    activations' functions, skipping ``nn.Module.__call__`` (docs/rollout_costs.md). It
    reads the live parameters through views made when it is built (the transposed
    weights), so in-place updates are seen; build it again after parameters are replaced
    by new tensors. Any other network is returned as it is.
    """
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
    nn.ELU: torch.nn.functional.elu,
    nn.SiLU: torch.nn.functional.silu,
}


def _linear(in_features: int, out_features: int, ortho_init: bool, gain: float) -> nn.Linear:
    layer = nn.Linear(in_features, out_features)
    if ortho_init:
        nn.init.orthogonal_(layer.weight, gain=gain)
        nn.init.zeros_(layer.bias)
    return layer


def check_device_available(device: torch.device) -> None:
    """ValueError (``device = ...``, one line) when this machine cannot run on ``device``:
    a CUDA device without a GPU or a CUDA build, a GPU index beyond those visible, or MPS
    off Apple silicon."""
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
