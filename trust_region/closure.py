"""What a closure returns and the checks on it: unpacking ``(loss, kl)`` or a
:class:`GGNClosureResult`, the solve mode it allows, and the "old side detached" checks."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.utils._pytree import tree_leaves

from .curvature import GGNClosureResult, flat_grad, ggn_vector_product, unflatten

__all__ = [
    "CLOSURE_CONTRACT",
    "FIRST_STEP_KL_TOL",
    "UNDETACHED_OLD_SIDE",
    "check_ggn_scale",
    "check_kl_at_start",
    "resolve_fvp",
    "subsample_index",
    "unpack",
]

FIRST_STEP_KL_TOL = 1e-4
# The first step's check of the Gauss-Newton products' scale: the KL probed at this size
# along SCALE_CHECK_PROBES random directions; the median ratio of measured to predicted
# curvature must lie within a factor SCALE_CHECK_FACTOR of 1. A wrong positions_per_sample
# is off by T (>= 2); piecewise-linear networks (ReLU) make single probes scatter by ~10%.
SCALE_CHECK_KL = 1e-5
SCALE_CHECK_PROBES = 3
SCALE_CHECK_FACTOR = 1.6
# The check's Gauss-Newton products run on at most this many samples, a fixed random subset
# scaled to the whole batch (the KL they are compared with is measured on all of it): on
# 8,192 Atari frames the whole-batch products took ~45 s of the first step and ~2 GB.
SCALE_CHECK_SAMPLES = 1024


CLOSURE_CONTRACT = (
    "the closure must return (loss, kl): two scalar tensors (the loss to minimise and the "
    "mean KL(old || new)), or a trust_region.GGNClosureResult"
)


def unpack(output: Any) -> tuple[Tensor, Tensor, GGNClosureResult | None]:
    ggn = output if isinstance(output, GGNClosureResult) else None
    if ggn is not None:
        pair: Any = (ggn.loss, ggn.kl)
    elif isinstance(output, (tuple, list)) and len(output) == 2:
        pair = output
    else:
        raise TypeError(f"{CLOSURE_CONTRACT}; got {type(output).__name__}")
    for name, value in zip(("loss", "kl"), pair, strict=True):
        if not isinstance(value, Tensor) or value.numel() != 1:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise TypeError(f"{CLOSURE_CONTRACT}; its {name} is {shape}")
    return pair[0].reshape(()), pair[1].reshape(()), ggn


def resolve_fvp(requested: str, ggn: GGNClosureResult | None, subsample: float) -> str:
    if requested in ("ggn", "ggn-head") and ggn is None:
        raise ValueError(
            f"fvp={requested!r} needs the closure to return a trust_region.GGNClosureResult "
            "(loss, kl, outputs_fn, output_fisher_vp, num_samples); with a plain (loss, kl) "
            "closure use fvp='hessian' or 'auto'"
        )
    if requested == "ggn-head" and ggn is not None and ggn.linear_head is None:
        raise ValueError(
            "fvp='ggn-head' needs the closure's GGNClosureResult to carry a linear_head "
            "(trust_region.LinearHead); without one use fvp='ggn' or 'auto'"
        )
    mode = requested
    if requested == "auto":
        mode = "hessian" if ggn is None else "ggn" if ggn.linear_head is None else "ggn-head"
    if mode == "hessian" and subsample < 1.0:
        raise ValueError(
            f"fvp_subsample={subsample} needs Gauss-Newton products: return a "
            "trust_region.GGNClosureResult from the closure (and fvp='ggn' or 'auto')"
        )
    return mode


UNDETACHED_OLD_SIDE = (
    "the closure's KL is exactly 0 at a step that moved the parameters: its 'old' side is "
    "probably not detached (computed inside the closure from the current parameters, so both "
    "sides move together and the KL bound holds nothing); compute the old distribution once "
    "before step, under torch.no_grad() or with .detach(); the parameters were left unchanged"
)


def check_kl_at_start(kl: Tensor, params: list[Tensor], loss_grad: Tensor) -> None:
    """KL(old ‖ new) at the old parameters must be 0 with zero gradient (to within
    ``FIRST_STEP_KL_TOL``, or half the parameters' machine epsilon for bfloat16/float16
    models, whose "old" and "new" forwards may round differently)."""
    if not kl.requires_grad:
        raise ValueError(
            "the closure's kl does not depend on the parameters: compute KL(old || new) from the "
            "current parameters, with only the old distribution detached"
        )
    kl_grad = flat_grad(kl, params, retain_graph=True)
    kl_value, kl_grad_norm = abs(float(kl.detach())), float(kl_grad.norm())
    scale = 1.0 + float(loss_grad.norm())
    tolerance = max(FIRST_STEP_KL_TOL, 0.5 * torch.finfo(params[0].dtype).eps)
    if kl_value > tolerance or kl_grad_norm > tolerance * scale:
        raise ValueError(
            f"the closure's KL at the current parameters is {kl_value:.3g} with gradient norm "
            f"{kl_grad_norm:.3g}; it must be ~0 with zero gradient: return the mean "
            "KL(old || new) where 'old' is the distribution at the current parameters, "
            "detached (and computed before step), and 'new' depends on the parameters"
        )


def subsample_index(num_samples: int, fraction: float, device: torch.device) -> Tensor | None:
    if fraction >= 1.0:
        return None
    count = max(1, math.ceil(fraction * num_samples))
    return torch.randperm(num_samples, device=device)[:count]


def check_ggn_scale(closure: Any, ggn: GGNClosureResult, params: list[Tensor]) -> None:
    """Raise ValueError unless the Gauss-Newton products have the KL's curvature.

    Along a probe ``v`` (private generator), ``KL(θ + εv) + KL(θ − εv) = ε² vᵀFv + O(ε⁴)``;
    this compares that with ``ε² vᵀGv`` from the closure's ``outputs_fn``, at ``ε`` where the
    predicted KL is ``SCALE_CHECK_KL``, and takes the median ratio over a few probes. It
    catches a ``num_samples`` or ``positions_per_sample`` that does not match the KL's mean,
    and an ``output_fisher_vp`` of the wrong distribution; it needs no double backward.
    Skipped below float32, where the KL cannot resolve it. Must run under ``torch.no_grad``;
    the parameters are restored bit for bit.
    """
    if params[0].dtype not in (torch.float32, torch.float64):
        return
    generator = torch.Generator().manual_seed(0)
    index, scale, count = None, 1.0, ggn.num_samples
    if count > SCALE_CHECK_SAMPLES:  # the rows outputs_fn gives, whatever num_samples says
        rows = tree_leaves(ggn.outputs_fn(tuple(params), None))[0].shape[0]
        index = torch.randperm(rows, generator=generator)[:SCALE_CHECK_SAMPLES]
        index, count = index.to(params[0].device), len(index)
        scale = rows / ggn.num_samples  # the subset's mean as the whole batch's sum / n
    terms = count * ggn.positions_per_sample
    product = ggn_vector_product(ggn.outputs_fn, ggn.output_fisher_vp, params, index, terms)
    size = sum(p.numel() for p in params)
    probes = torch.randn(SCALE_CHECK_PROBES, size, generator=generator, dtype=torch.float64)
    probes = probes.to(device=params[0].device, dtype=params[0].dtype)
    predictions = [scale * float(probe @ product(probe)) for probe in probes]  # before moves
    ratios = []
    for probe, predicted in zip(probes, predictions, strict=True):
        if not (math.isfinite(predicted) and predicted > 0.0):
            continue  # no curvature along this probe to compare
        epsilon = math.sqrt(2.0 * SCALE_CHECK_KL / predicted)
        measured = sum(_kl_at(closure, params, sign * epsilon * probe) for sign in (1.0, -1.0))
        if measured == 0.0:  # the parameters moved, the outputs with them: never exactly 0
            raise ValueError(UNDETACHED_OLD_SIDE)
        ratios.append(measured / (epsilon**2 * predicted))
    if not ratios:
        return
    ratio = sorted(ratios)[len(ratios) // 2]
    if not (1.0 / SCALE_CHECK_FACTOR < ratio < SCALE_CHECK_FACTOR):
        raise ValueError(
            f"the closure's Gauss-Newton products do not match its KL: along random probes the "
            f"KL curves {ratio:.3g} times (median) what outputs_fn/output_fisher_vp predict with "
            f"num_samples={ggn.num_samples} and positions_per_sample="
            f"{ggn.positions_per_sample}. The products are divided by num_samples x "
            "positions_per_sample, which must be the number of terms the KL averages: for "
            "outputs (B, T, ...) with a KL averaged over B*T positions use num_samples=B, "
            "positions_per_sample=T; check too that output_fisher_vp is the Hessian of this "
            "KL's distribution, and that the old distribution shares no storage with a "
            "parameter (log_std.expand_as(mean) is a view of the parameter: clone it) (see "
            "trust_region.GGNClosureResult)"
        )


def _kl_at(closure: Any, params: list[Tensor], offset: Tensor) -> float:
    """The closure's KL with ``offset`` added to the parameters, which are then restored."""
    start = [p.detach().clone() for p in params]
    try:
        for p, delta in zip(params, unflatten(offset, params), strict=True):
            p.add_(delta)
        return float(unpack(closure())[1].detach())
    finally:
        for p, original in zip(params, start, strict=True):
            p.copy_(original)
