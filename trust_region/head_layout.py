"""Where the feature, head and diagonal parameters of a :class:`LinearHead` sit in the
optimizer's flat parameter vector (for :mod:`trust_region.head`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .curvature import flatten, unflatten
from .linear_head import LinearHead, as_curvature

__all__ = ["HeadLayout", "HeadParts", "split_damping"]


class HeadParts(NamedTuple):
    """A flat parameter-space vector split by role.

    Attributes:
        features (Tensor): ``(F,)``, in ``feature_params`` order.
        head (Tensor): ``(out, k+1)`` ``[W | b]``, or ``(out, k)`` without a bias.
        diagonal (Tensor): ``(D,)``, in ``diagonal_curvature`` order.
    """

    features: Tensor
    head: Tensor
    diagonal: Tensor


class HeadLayout:
    """Where the feature, head and diagonal parameters sit in the optimizer's flat vector.

    Raises ValueError unless every tensor of ``params`` is in exactly one role of ``head``
    and every tensor ``head`` names is one of ``params`` (matched by identity).
    """

    def __init__(self, head: LinearHead, params: Sequence[Tensor]) -> None:
        self.params = list(params)
        self.features = list(head.feature_params)
        self.weight, self.bias = head.weight, head.bias
        self.diagonal = [p for p, _ in head.diagonal_curvature]
        _check_partition(self.params, self._roles())
        self.diagonal_curvature = _concat(
            [
                as_curvature(c, tuple(p.shape), "diagonal_curvature", False).reshape(-1)
                for p, c in head.diagonal_curvature
            ],
            head.weight.new_zeros(0, dtype=torch.float64),
        ).to(head.weight.device)  # a number's curvature is made on the CPU

    def _roles(self) -> list[tuple[str, Tensor]]:
        named = [("feature_params", p) for p in self.features] + [("weight", self.weight)]
        named += [] if self.bias is None else [("bias", self.bias)]
        return named + [("diagonal_curvature", p) for p in self.diagonal]

    def split(self, flat: Tensor) -> HeadParts:
        """Cut a flat vector in the optimizer's order into :class:`HeadParts`."""
        pieces = _by_identity(self.params, flat)
        empty = flat.new_zeros(0)
        head = pieces[id(self.weight)]
        if self.bias is not None:
            head = torch.cat([head, pieces[id(self.bias)][:, None]], dim=1)
        return HeadParts(
            _concat([pieces[id(p)].reshape(-1) for p in self.features], empty),
            head,
            _concat([pieces[id(p)].reshape(-1) for p in self.diagonal], empty),
        )

    def join(self, parts: HeadParts) -> Tensor:
        """Inverse of :meth:`split`."""
        pieces = _by_identity(self.features, parts.features)
        pieces |= _by_identity(self.diagonal, parts.diagonal)
        k = self.weight.shape[1]
        pieces[id(self.weight)] = parts.head[:, :k]
        if self.bias is not None:
            pieces[id(self.bias)] = parts.head[:, k]
        return flatten([pieces[id(p)] for p in self.params])


def _by_identity(params: list[Tensor], flat: Tensor) -> dict[int, Tensor]:
    return dict(zip(map(id, params), unflatten(flat, params), strict=True))


def _concat(tensors: list[Tensor], empty: Tensor) -> Tensor:
    return torch.cat(tensors) if tensors else empty


def _check_partition(params: list[Tensor], roles: list[tuple[str, Tensor]]) -> None:
    trainable = {id(p) for p in params}
    seen: dict[int, str] = {}
    for role, tensor in roles:
        if id(tensor) not in trainable:
            raise ValueError(
                f"LinearHead.{role}: a tensor of shape {tuple(tensor.shape)} is not one of the "
                "optimizer's trainable parameters"
            )
        if id(tensor) in seen:
            raise ValueError(
                f"LinearHead: a parameter of shape {tuple(tensor.shape)} is named twice "
                f"({seen[id(tensor)]} and {role}); each parameter has exactly one role"
            )
        seen[id(tensor)] = role
    for position, p in enumerate(params):
        if id(p) not in seen:
            raise ValueError(
                f"LinearHead: the optimizer's parameter #{position} (shape {tuple(p.shape)}) "
                "is in none of feature_params, weight, bias, diagonal_curvature; every "
                "trainable parameter needs exactly one role (curvature 0 if the KL ignores it)"
            )


def split_damping(layout: HeadLayout, damping: float | Tensor, like: Tensor) -> HeadParts:
    """Damping (a number, or a flat per-parameter vector) split like the parameters."""
    if isinstance(damping, Tensor):
        return layout.split(damping)
    value = like.new_tensor(float(damping))
    return HeadParts(value, value.reshape(1), value)
