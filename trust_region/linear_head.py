"""``LinearHead``: the description of a model whose KL-relevant outputs are linear in its last
layer, which a :class:`~trust_region.GGNClosureResult` may carry so that the optimizer solves
that layer exactly (the solve itself is :mod:`trust_region.head`).

A module of its own so that both the closure result (``curvature``) and the solve (``head``)
can name it without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["FeaturesFn", "LinearHead", "as_curvature", "describe"]

FeaturesFn = Callable[[tuple[Tensor, ...], Tensor | None], Tensor]


@dataclass(frozen=True)
class LinearHead:
    r"""The structure of a model whose KL-relevant outputs are linear in its last layer.

    Add it to :class:`GGNClosureResult` (``linear_head=...``) and the optimizer, with
    ``fvp="auto"`` or ``"ggn-head"``, solves the head exactly and runs conjugate gradient on the
    other parameters only (``StepResult.fvp == "ggn-head"``). Valid only when all of these hold
    at the current parameters:

    1. the closure's ``kl`` is the **mean over samples** of a per-sample KL(old ‖ new) that
       depends on the head-side outputs ``yᵢ = weight · φᵢ + bias`` (exactly linear in
       ``weight`` and ``bias``: no activation after the head) and on the ``diagonal_curvature``
       parameters only;
    2. the Hessian of each sample's KL with respect to ``yᵢ`` is ``diag(output_precision)``,
       **the same for every sample** (e.g. a Gaussian with a state-independent std:
       ``exp(−2·log_std)``; a categorical fails this);
    3. each ``diagonal_curvature`` parameter's Fisher block is ``diag(curvature)`` and
       couples to no other parameter (e.g. that Gaussian's ``log_std``: 2.0).

    Every trainable parameter of the optimizer must be in exactly one of ``feature_params``,
    ``weight``, ``bias`` and ``diagonal_curvature`` (a parameter the KL does not depend on
    goes in ``diagonal_curvature`` with curvature 0). On its first step the optimizer checks
    one Fisher product against the KL's Hessian and raises if they differ.

    Attributes:
        features_fn (callable): ``(values, index) -> φ``, a pure function of the values of
            ``feature_params`` (in that order) returning the head's inputs ``(n, k)`` for the
            samples ``index`` (a ``LongTensor``), or for the whole batch when ``index`` is
            None. See :func:`functional_model`.
        feature_params (sequence of Tensor): the parameters ``features_fn`` takes.
        weight (Tensor): the head's weight ``(out, k)``, one of the optimizer's parameters.
        bias (Tensor or None): the head's bias ``(out,)``, or None when it has none.
        output_precision (Tensor or float): ``h``, the diagonal of the output-space KL
            Hessian, broadcastable to ``(out,)``, finite and > 0; taken as a constant.
        diagonal_curvature (sequence of (Tensor, float or Tensor)): parameters with a
            constant diagonal Fisher block and their curvature, broadcastable to the
            parameter's shape, finite and ≥ 0 (default: none).

    Example:
        >>> body, head = net[:-1], net[-1]               # net ends in nn.Linear: the mean
        >>> feature_params = list(body.parameters())
        >>> body_fn = functional_model(body, feature_params)
        >>> spec = LinearHead(
        ...     features_fn=lambda ps, idx: body_fn(ps, x if idx is None else x[idx]),
        ...     feature_params=feature_params, weight=head.weight, bias=head.bias,
        ...     output_precision=torch.exp(-2 * log_std.detach()),
        ...     diagonal_curvature=[(log_std, 2.0)])
    """

    features_fn: FeaturesFn
    feature_params: Sequence[Tensor]
    weight: Tensor
    bias: Tensor | None
    output_precision: Tensor | float
    diagonal_curvature: Sequence[tuple[Tensor, float | Tensor]] = ()

    def __post_init__(self) -> None:
        if not callable(self.features_fn):
            raise ValueError("LinearHead.features_fn must be callable: (values, index) -> (n, k)")
        if not isinstance(self.weight, Tensor) or self.weight.dim() != 2:
            raise ValueError(
                f"LinearHead.weight must be a 2-D tensor (out, k); got {describe(self.weight)}"
            )
        out = self.weight.shape[0]
        if self.bias is not None and (
            not isinstance(self.bias, Tensor) or tuple(self.bias.shape) != (out,)
        ):
            raise ValueError(
                f"LinearHead.bias must be None or a tensor of shape ({out},) to match weight "
                f"{tuple(self.weight.shape)}; got {describe(self.bias)}"
            )
        as_curvature(self.output_precision, (out,), "output_precision", positive=True)
        for entry in self.diagonal_curvature:
            if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], Tensor)):
                raise ValueError(
                    "LinearHead.diagonal_curvature must hold (parameter, curvature) pairs; "
                    f"got {entry!r}"
                )
            as_curvature(entry[1], tuple(entry[0].shape), "diagonal_curvature", positive=False)

    def precision(self) -> Tensor:
        """``h`` as a float64 tensor ``(out,)`` on the weight's device, detached."""
        out = self.weight.shape[0]
        precision = as_curvature(self.output_precision, (out,), "output_precision", True)
        return precision.to(self.weight.device)


def describe(value: object) -> str:
    """``shape (…)`` of a tensor, else the type's name: for error messages."""
    return f"shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


def as_curvature(
    value: Tensor | float, shape: tuple[int, ...], name: str, positive: bool
) -> Tensor:
    """``value`` broadcast to ``shape`` as a detached float64 tensor, validated."""
    try:
        tensor = torch.as_tensor(value).detach().to(torch.float64).expand(shape)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ValueError(
            f"LinearHead.{name} must be a number or a tensor broadcastable to {shape}; "
            f"got {describe(value) if isinstance(value, Tensor) else repr(value)}"
        ) from error
    bad = ~torch.isfinite(tensor) | ((tensor <= 0) if positive else (tensor < 0))
    if bool(bad.any()):
        allowed = "> 0" if positive else ">= 0"
        raise ValueError(
            f"LinearHead.{name} must be finite and {allowed}; got {tensor.flatten().tolist()}"
        )
    return tensor
