"""Generalized advantage estimation (Schulman et al., 2016): a pure function on time-major
``(T, N)`` tensors."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["gae"]


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """``(advantages, returns)`` of a ``(T, N)`` batch (row ``t``: the transition at time
    ``t`` of each env; float rewards, values and ``next_values`` = V of the observation that
    followed), by the backward recursion from the last row::

        δ_t = r_t + γ (1 − terminated_t) V'_t − V_t
        Â_t = δ_t + γ λ (1 − done_t) Â_{t+1},      done_t = terminated_t or truncated_t
        R_t = Â_t + V_t

    A truncation bootstraps from ``V'_t`` but cuts the λ-chain; a termination does neither.
        >>> r = torch.ones(3, 1)
        >>> v = torch.zeros(3, 1)
        >>> done = torch.tensor([[False], [False], [True]])
        >>> adv, ret = gae(r, v, v, done, torch.zeros_like(done), gamma=1.0, lam=1.0)
        >>> adv.squeeze(1).tolist()
        [3.0, 2.0, 1.0]
    """
    _check_inputs(rewards, values, next_values, terminated, truncated, gamma, lam)
    dtype = rewards.dtype
    bootstrap = (~terminated).to(dtype)
    chain = (~(terminated | truncated)).to(dtype) * (gamma * lam)
    deltas = rewards + gamma * bootstrap * next_values - values
    advantages = _backward_recursion(deltas, chain)
    return advantages, advantages + values


def _backward_recursion(deltas: Tensor, coefficients: Tensor) -> Tensor:
    """``x_t = deltas_t + coefficients_t · x_{t+1}`` from the last row back (NumPy views on
    CPU: cheaper per small row than torch ops)."""
    result = torch.empty_like(deltas)
    if deltas.device.type == "cpu" and not deltas.requires_grad:
        d, c, out = deltas.numpy(), coefficients.numpy(), result.numpy()
        scratch = np.empty_like(d[0])
        following = np.zeros_like(d[0])
        for t in range(d.shape[0] - 1, -1, -1):
            np.multiply(c[t], following, out=scratch)
            np.add(d[t], scratch, out=out[t])
            following = out[t]
        return result
    following = torch.zeros_like(deltas[0])
    for t in range(deltas.shape[0] - 1, -1, -1):
        following = deltas[t] + coefficients[t] * following
        result[t] = following
    return result


def _check_inputs(
    rewards: Tensor, values: Tensor, next_values: Tensor, terminated: Tensor,
    truncated: Tensor, gamma: float, lam: float,
) -> None:  # fmt: skip
    """Raise a ValueError naming the first argument that breaks the contract of ``gae``."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (T, N), got shape {tuple(rewards.shape)}")
    if rewards.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"rewards must be float32 or float64, got {rewards.dtype}")
    for name, tensor in (("values", values), ("next_values", next_values)):
        if tensor.shape != rewards.shape or tensor.dtype != rewards.dtype:
            raise ValueError(
                f"{name} must match rewards: shape {tuple(rewards.shape)} and {rewards.dtype}, "
                f"got {tuple(tensor.shape)} and {tensor.dtype}"
            )
    for name, tensor in (("terminated", terminated), ("truncated", truncated)):
        if tensor.shape != rewards.shape or tensor.dtype != torch.bool:
            raise ValueError(
                f"{name} must be a bool tensor of shape {tuple(rewards.shape)}, "
                f"got {tuple(tensor.shape)} and {tensor.dtype}"
            )
    for name, value in (("gamma", gamma), ("lam", lam)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"Invalid {name}: {value} (allowed: 0 <= {name} <= 1)")
