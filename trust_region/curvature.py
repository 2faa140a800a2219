"""Curvature-vector products of the trust region's metric (the KL's Hessian).

Two ways to multiply a vector by the Fisher matrix ``F`` of a KL-constrained step:

* :func:`hessian_vector_product` differentiates the closure's KL twice. It works for any
  closure; the graph of ``∇KL`` is built once per step and reused by every product.
* :func:`ggn_vector_product` uses the Gauss-Newton form ``F = (1/n) Σᵢ Jᵢᵀ Hᵢ Jᵢ``, where
  ``Jᵢ`` is the Jacobian of sample ``i``'s model outputs with respect to the parameters and
  ``Hᵢ`` the Hessian of that sample's KL in output space. At the current parameters the KL's
  output-space gradient is zero, so this *is* the KL's Hessian, computed from one
  saved forward pass (``torch.func.vjp``) without differentiating the KL itself twice.

The output-space Hessians of the usual distributions are given here too:
:func:`categorical_fisher_vp`, :func:`bernoulli_fisher_vp`, :func:`diag_gaussian_fisher_vp`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_leaves, tree_map, tree_structure, tree_unflatten

from .kernels import twice_differentiable
from .linear_head import LinearHead

__all__ = [
    "GGNClosureResult",
    "bernoulli_fisher_vp",
    "categorical_fisher_vp",
    "diag_gaussian_fisher_vp",
    "flat_grad",
    "flatten",
    "functional_model",
    "ggn_vector_product",
    "hessian_vector_product",
    "unflatten",
]

Outputs = Any  # a tensor or a tuple/list/dict of tensors (a pytree), leading dim = samples


@dataclass(frozen=True)
class GGNClosureResult:
    """What a closure returns to enable the Gauss-Newton Fisher products (``fvp="ggn"``).

    Attributes:
        loss (Tensor): scalar loss to minimise, computed with grad enabled.
        kl (Tensor): scalar mean KL(old ‖ new) over the batch.
        outputs_fn (callable): ``(params, index) -> outputs``, a pure function of the
            parameter tensors (in the optimizer's order: see :func:`functional_model`) that
            returns the model outputs the KL depends on, for the samples ``index`` (a
            ``LongTensor``) or for the whole batch when ``index`` is None. Outputs are a
            tensor or a tuple of tensors whose first dimension is the sample.
        output_fisher_vp (callable): ``(outputs, tangents) -> tangents``, the Hessian of each
            sample's KL with respect to its outputs at ``outputs``, applied sample by sample
            (no averaging over samples): e.g. :func:`categorical_fisher_vp`.
        num_samples (int): number of samples in the batch: the size of the outputs' first
            dimension, what ``index`` selects from (sequences, for a sequence model).
        positions_per_sample (int, optional): how many KL terms each sample contributes to
            the mean, ≥ 1: the KL is the mean over ``num_samples × positions_per_sample``
            terms. 1 when the KL is a mean over samples (also a per-sequence KL *summed*
            over its positions); ``T`` for logits ``(B, T, V)`` whose KL is averaged over
            all ``B·T`` positions, with ``num_samples=B`` (default: 1). See "Sequence
            outputs" below.
        linear_head (LinearHead, optional): when the outputs are linear in the model's last
            layer with a constant diagonal output Hessian (e.g. a Gaussian policy with a
            state-independent std), that structure: the optimizer then solves the last layer
            exactly and runs CG on the other parameters only (``fvp="ggn-head"``); see
            :class:`LinearHead` for the conditions (default: None).

    Sequence outputs: ``output_fisher_vp`` acts on the last dimension and the products sum
    ``Jᵀ H J`` over every other position of the outputs, then divide by
    ``num_samples × positions_per_sample``. For a language model with logits ``(B, T, V)``
    and ``kl = KL(old ‖ new)`` averaged over the ``B·T`` next-token distributions, return
    ``num_samples=B`` and ``positions_per_sample=T``: the products are then the Hessian of
    that KL, so ``max_kl`` bounds the mean per-token KL, and ``fvp_subsample`` draws whole
    sequences. On the first step the optimizer checks the scale against the KL itself (two
    extra forward passes) and raises ValueError, naming both fields, when they disagree
    with the KL's own curvature.

    Example:
        >>> model_fn = functional_model(net, params)
        >>> def closure():
        ...     logits = net(x)
        ...     loss = F.cross_entropy(logits, y)
        ...     kl = categorical_kl(old_logits, logits).mean()
        ...     return GGNClosureResult(loss, kl, lambda ps, idx: model_fn(ps, x if idx is None
        ...                             else x[idx]), categorical_fisher_vp, len(x))
    """

    loss: Tensor
    kl: Tensor
    outputs_fn: Callable[[tuple[Tensor, ...], Tensor | None], Outputs]
    output_fisher_vp: Callable[[Outputs, Outputs], Outputs]
    num_samples: int
    linear_head: LinearHead | None = None
    positions_per_sample: int = 1

    def __post_init__(self) -> None:
        for name in ("num_samples", "positions_per_sample"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GGNClosureResult.{name} must be an integer >= 1; got {value!r}")
        if self.linear_head is not None and self.positions_per_sample != 1:
            raise ValueError(
                "GGNClosureResult.positions_per_sample must be 1 with a linear_head (the "
                f"head-eliminated solve takes one output row per sample); got "
                f"{self.positions_per_sample}: flatten the positions into the samples instead"
            )
        if self.linear_head is not None and not isinstance(self.linear_head, LinearHead):
            raise ValueError(
                "GGNClosureResult.linear_head must be a trust_region.LinearHead or None; got "
                f"{type(self.linear_head).__name__}"
            )


def flatten(tensors: Sequence[Tensor]) -> Tensor:
    """Concatenate tensors into one 1-D tensor."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: Tensor, like: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """Split a 1-D tensor into views shaped like ``like``."""
    pieces = torch.split(vector, [t.numel() for t in like])
    return tuple(piece.view_as(t) for piece, t in zip(pieces, like, strict=True))


def functional_model(module: nn.Module, params: Sequence[Tensor]) -> Callable[..., Any]:
    """Turn ``module`` into a pure function of ``params`` (for ``GGNClosureResult.outputs_fn``).

    Args:
        module (nn.Module): the model.
        params (sequence of Tensor): the parameters handed to the optimizer, in its order;
            each must be a parameter of ``module`` (others keep their current values).

    Returns:
        ``fn(param_values, *args, **kwargs)`` that runs ``module(*args, **kwargs)`` with
        ``param_values`` in place of ``params``.
    """
    by_identity = {id(p): name for name, p in module.named_parameters(remove_duplicate=False)}
    names = []
    for p in params:
        if id(p) not in by_identity:
            raise ValueError("functional_model: a parameter is not part of the module")
        names.append(by_identity[id(p)])

    def fn(param_values: Sequence[Tensor], *args: Any, **kwargs: Any) -> Any:
        return torch.func.functional_call(
            module, dict(zip(names, param_values, strict=True)), args, kwargs
        )

    return fn


def flat_grad(output: Tensor, params: Sequence[Tensor], **kwargs: Any) -> Tensor:
    """Gradient of ``output`` with respect to ``params`` as one flat vector (zeros if unused).

    ``kwargs`` go to :func:`torch.autograd.grad` (``grad_outputs``, ``retain_graph``, ...).
    """
    grads = torch.autograd.grad(output, params, allow_unused=True, **kwargs)
    return flatten(
        [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params, strict=True)]
    )


def hessian_vector_product(kl: Tensor, params: Sequence[Tensor]) -> Callable[[Tensor], Tensor]:
    """Return ``v -> ∇²KL · v`` (flat vectors), building the graph of ``∇KL`` once.

    The forward that computed ``kl`` must be twice differentiable: for a model with
    attention, compute it under :func:`~trust_region.kernels.twice_differentiable` (the
    optimizer does so for its closure).

    Args:
        kl (Tensor): scalar, with a graph to ``params``.
        params (sequence of Tensor): the parameters.
    """
    kl_grad = flat_grad(kl, params, create_graph=True)

    def product(vector: Tensor) -> Tensor:
        return flat_grad(kl_grad, params, grad_outputs=vector, retain_graph=True)

    return product


def ggn_vector_product(
    outputs_fn: Callable[[tuple[Tensor, ...], Tensor | None], Outputs],
    output_fisher_vp: Callable[[Outputs, Outputs], Outputs],
    params: Sequence[Tensor],
    index: Tensor | None,
    num_samples: int,
) -> Callable[[Tensor], Tensor]:
    """Return ``v -> (1/n) Σᵢ Jᵢᵀ Hᵢ Jᵢ v`` over the samples ``index`` (all when None).

    One forward pass is taken per step (``torch.func.vjp``) and saved; ``J v`` comes from
    differentiating the linear map ``u -> Jᵀu`` (built once) with respect to ``u``, so each
    product is two backward passes over saved graphs and no forward pass. (Measured on a
    64×64 MLP with 2,048 samples: this costs 1.5× a forward+backward per product, against
    2.7× for ``torch.func.jvp`` followed by the saved ``vjp``.)

    Args:
        outputs_fn (callable): ``(params, index) -> outputs``, see :class:`GGNClosureResult`.
        output_fisher_vp (callable): per-sample output-space KL Hessian product.
        params (sequence of Tensor): the parameters, in the order ``outputs_fn`` takes them.
        index (Tensor or None): sample indices to use, None for all.
        num_samples (int): the number of samples used (the ``n`` of the mean).
    """
    primals = tuple(p.detach() for p in params)
    with torch.enable_grad(), twice_differentiable():
        outputs, vjp_fn = torch.func.vjp(lambda *values: outputs_fn(values, index), *primals)
        outputs = tree_map(torch.Tensor.detach, outputs)
        probe = tree_map(lambda o: torch.zeros_like(o, requires_grad=True), outputs)
        transposed = vjp_fn(probe)  # Jᵀ·probe, linear in probe, with its graph
    probe_leaves = tree_leaves(probe)
    scale = 1.0 / num_samples

    def product(vector: Tensor) -> Tensor:
        with torch.enable_grad():
            jv_leaves = torch.autograd.grad(
                transposed, probe_leaves, grad_outputs=unflatten(vector, primals),
                retain_graph=True,
            )  # fmt: skip
            jv = tree_unflatten(list(jv_leaves), tree_structure(probe))
            return flatten(vjp_fn(output_fisher_vp(outputs, jv))) * scale

    return product


def categorical_fisher_vp(logits: Tensor, tangent: Tensor) -> Tensor:
    """Per-sample output Hessian of KL(old ‖ softmax(logits)) applied to ``tangent``.

    ``H = diag(p) − p pᵀ`` with ``p = softmax(logits)``, over the last dimension.
    """
    probs = torch.softmax(logits, dim=-1)
    weighted = probs * tangent
    return weighted - probs * weighted.sum(dim=-1, keepdim=True)


def bernoulli_fisher_vp(logits: Tensor, tangent: Tensor) -> Tensor:
    """Per-sample output Hessian of independent Bernoulli KLs in logits: ``p(1−p)``."""
    probs = torch.sigmoid(logits)
    return probs * (1 - probs) * tangent


def diag_gaussian_fisher_vp(
    outputs: tuple[Tensor, Tensor], tangents: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """Output Hessian of KL(old ‖ N(mean, exp(log_std)²)) in ``(mean, log_std)``.

    ``H = diag(exp(−2 log_std))`` for the mean and ``2·I`` for ``log_std``, no cross terms.
    A state-independent ``log_std`` is expanded to the batch by the caller's ``outputs_fn``.
    """
    _, log_std = outputs
    tangent_mean, tangent_log_std = tangents
    return tangent_mean * torch.exp(-2.0 * log_std), 2.0 * tangent_log_std
