"""The backtracking line search of a trust-region step, and what a step reports."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from .closure import UNDETACHED_OLD_SIDE, unpack
from .distributed import WeightedReducer

__all__ = ["KL_RELATIVE_SLACK", "StepResult", "backtracking_line_search", "set_params"]

KL_RELATIVE_SLACK = 1e-6  # floating-point rounding only


@dataclass(frozen=True)
class StepResult:
    """What one :meth:`TrustRegionOptimizer.step` did.

    Attributes:
        accepted (bool): the parameters moved.
        loss_before (float): closure loss at the starting parameters.
        loss_after (float): closure loss at the final parameters (``loss_before`` if rejected).
        kl (float): closure KL at the final parameters (0.0 if rejected).
        expected_improvement (float): linear prediction ``−gᵀs`` of the full step's decrease.
        step_fraction (float): fraction of the full step taken (1.0 = full, 0.0 = rejected).
        backtracks (int): shrinks before acceptance (all candidates tried when rejected).
        cg_iterations (int): Fisher-vector products spent in conjugate gradient (in "ggn-head"
            mode: Schur-complement products over the non-head parameters).
        cg_residual (float): squared residual norm at the end of conjugate gradient.
        reason (str | None): why the step was rejected, None when accepted.
        fvp (str): the Fisher-vector product mode used: "hessian", "ggn", or "ggn-head"
            (Gauss-Newton with the linear output layer eliminated, see :class:`LinearHead`).
        grad_norm (float): norm of the loss gradient.
    """

    accepted: bool
    loss_before: float
    loss_after: float
    kl: float
    expected_improvement: float
    step_fraction: float
    backtracks: int
    cg_iterations: int
    cg_residual: float
    reason: str | None
    fvp: str
    grad_norm: float


def backtracking_line_search(
    closure: Callable[[], Any],
    params: list[Tensor],
    full_step: Tensor,
    loss_before: float,
    expected_improvement: float,
    settings: dict[str, Any],
    mode: str,
    cg_info: dict[str, Any],
    reducer: WeightedReducer,
) -> StepResult:
    """Try ``θ + cᵏ·full_step`` for ``k = 0 … backtrack_iters`` (``c = backtrack_coeff``);
    accept the first candidate whose loss and KL are finite, whose KL (as the closure
    measures it) is at most ``max_kl`` and whose loss fell by at least ``accept_ratio`` of
    the linear prediction ``cᵏ · expected_improvement``. None accepted: the parameters are
    restored bit for bit. A candidate with a KL of exactly 0 means the closure's "old" side
    moves with the parameters: ValueError, parameters restored.
    """
    start = [p.detach().clone() for p in params]
    max_kl = settings["max_kl"]
    reason = "no candidate"
    fraction = 1.0
    tried = 0
    for tried in range(settings["backtrack_iters"] + 1):
        fraction = settings["backtrack_coeff"] ** tried
        set_params(params, start, full_step, fraction)
        loss, kl, _ = unpack(closure())
        loss_after, kl_after = reducer.scalars(loss, kl)
        if kl_after == 0.0:  # the parameters moved, the outputs with them: never exactly 0
            for p, original in zip(params, start, strict=True):
                p.copy_(original)
            raise ValueError(UNDETACHED_OLD_SIDE)
        improvement = loss_before - loss_after
        if not math.isfinite(loss_after):
            reason = "non-finite loss"
        elif not math.isfinite(kl_after):
            reason = "non-finite kl"
        elif kl_after > max_kl * (1.0 + KL_RELATIVE_SLACK):
            reason = "kl exceeded"
        elif improvement < settings["accept_ratio"] * fraction * expected_improvement or (
            improvement <= 0.0
        ):
            reason = "no improvement"
        else:
            return StepResult(
                accepted=True, loss_before=loss_before, loss_after=loss_after, kl=kl_after,
                expected_improvement=expected_improvement, step_fraction=fraction,
                backtracks=tried, reason=None, fvp=mode, **cg_info,
            )  # fmt: skip
    for p, original in zip(params, start, strict=True):
        p.copy_(original)
    return StepResult(
        accepted=False, loss_before=loss_before, loss_after=loss_before, kl=0.0,
        expected_improvement=expected_improvement, step_fraction=0.0, backtracks=tried,
        reason=reason, fvp=mode, **cg_info,
    )  # fmt: skip


def set_params(params: list[Tensor], start: list[Tensor], step: Tensor, fraction: float) -> None:
    offset = 0
    for p, original in zip(params, start, strict=True):
        n = p.numel()
        p.copy_(original + fraction * step[offset : offset + n].view_as(p))
        offset += n
