"""Generalized advantage estimation (Schulman et al., 2016, arXiv:1506.02438).

A pure function: no I/O, no globals, time-major ``(T, N)`` tensors in and out.
"""

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
    """Generalized advantage estimates and λ-returns for a ``(T, N)`` batch of transitions.

    Row ``t`` of every argument describes the transition taken at time ``t`` in each of the
    ``N`` environments. The recursion, run backwards from the last row with nothing after it::

        δ_t = r_t + γ (1 − terminated_t) V'_t − V_t
        Â_t = δ_t + γ λ (1 − done_t) Â_{t+1},      done_t = terminated_t or truncated_t
        R_t = Â_t + V_t

    A time-limit truncation therefore bootstraps from ``V'_t`` (the value of the final
    observation before the reset) but still cuts the λ-chain at the episode boundary; a
    termination does neither bootstrap nor chain.

    Args:
        rewards (Tensor): ``(T, N)`` rewards ``r_t``, float32 or float64.
        values (Tensor): ``(T, N)`` ``V(s_t)``, same dtype as ``rewards``.
        next_values (Tensor): ``(T, N)`` ``V'_t``, the value of the observation that followed
            step ``t``: for a truncated step the final observation before the reset; ignored
            where ``terminated_t``.
        terminated (Tensor): ``(T, N)`` bool, the episode ended in a terminal state at ``t``.
        truncated (Tensor): ``(T, N)`` bool, the episode was cut (e.g. by a time limit) at ``t``.
        gamma (float): discount ``γ`` in ``[0, 1]``.
        lam (float): GAE ``λ`` in ``[0, 1]``; ``0`` gives one-step TD errors, ``1`` Monte Carlo.

    Returns:
        tuple[Tensor, Tensor]: ``(advantages, returns)``, both ``(T, N)`` with the dtype of
        ``rewards``.

    Example:
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
    """``x_t = deltas_t + coefficients_t · x_{t+1}`` from the last row back, ``x_T = 0``.

    On CPU the loop runs on NumPy views of the tensors (a NumPy op on a small row costs a
    fraction of a torch op's dispatch); elsewhere, or when autograd records, on the tensors.
    """
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
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    lam: float,
) -> None:
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
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"Invalid gamma: {gamma} (allowed: 0 <= gamma <= 1)")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"Invalid lam: {lam} (allowed: 0 <= lam <= 1)")
