r"""Trust-region solves with a linear output layer eliminated exactly (``fvp="ggn-head"``).

When the model's outputs are linear in its last layer (the "head") and the KL's Hessian in
output space is the same diagonal matrix for every sample, the Fisher matrix has a block
structure that conjugate gradient need not discover:

* outputs: ``yᵢ = W φᵢ(θ_f) + b`` for sample ``i``, with features ``φ`` ``(n, k)`` computed
  from the feature parameters ``θ_f``, head weight ``W`` ``(out, k)`` and bias ``b``;
* output Hessian: ``∇²_y KLᵢ = H = diag(h)``, ``h`` ``(out,)``, identical for all samples;
* a few more parameters (e.g. a state-independent ``log_std``) with a constant diagonal
  Fisher block ``diag(c)`` and no coupling to anything else.

With ``aᵢ = [φᵢ, 1]`` (no 1 without a bias), ``A = (1/n) Σᵢ aᵢaᵢᵀ``, head block
``V = [W | b]`` and ``J`` the Jacobian of the features, the damped Fisher ``F + λ`` is::

    head:      (F_vv + λ) V = H V A + λ V        exactly Kronecker: solved in A's eigenbasis
    coupling:  F_vf v = (1/n) Σᵢ H W Jᵢ v aᵢᵀ     F_fv = F_vfᵀ
    features:  (F_ff + λ) v = (1/n) Σᵢ Jᵢᵀ Wᵀ H W Jᵢ v + λ v
    diagonal:  (c + λ) I, coupled to nothing

:func:`linear_head_solve` eliminates the head and the diagonal block exactly and runs
conjugate gradient on the Schur complement ``S = F_ff + λ − F_fv (F_vv + λ)⁻¹ F_vf`` over the
feature parameters, which lacks the head's large eigenvalues and so converges in far fewer
iterations than CG on the whole matrix. Each ``S v`` costs one Jacobian and one transposed
Jacobian product through the feature layers (what a Gauss-Newton product costs), plus
``(out × (k+1))``-sized algebra.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .cg import CGResult, conjugate_gradient_solve
from .curvature import flatten, hessian_vector_product, unflatten
from .head_layout import HeadLayout, HeadParts, split_damping
from .linear_head import FeaturesFn, LinearHead, describe

__all__ = [
    "HeadInputs",
    "LinearHead",
    "check_linear_head",
    "head_inputs",
    "linear_head_fisher_product",
    "linear_head_solve",
]

Reduce = Callable[[Tensor], Tensor]
# The first step's check of the description against the KL's Hessian: relative error allowed.
CHECK_RELATIVE_TOLERANCE = 1e-3


# -------------------------------------------------------------------- features
@dataclass(frozen=True)
class LinearizedFeatures:
    """The features ``θ_f -> φ`` linearised at the current parameters.

    Attributes:
        features (Tensor): ``φ``, ``(n, k)``, detached.
        jvp (callable): flat feature-parameter vector ``v -> J v``, ``(n, k)``.
        vjp (callable): ``(n, k)`` cotangent ``u -> Jᵀ u``, a flat feature-parameter vector.
    """

    features: Tensor
    jvp: Callable[[Tensor], Tensor]
    vjp: Callable[[Tensor], Tensor]


def linearize_features(
    features_fn: FeaturesFn, params: Sequence[Tensor], index: Tensor | None
) -> LinearizedFeatures:
    """One saved forward pass (``torch.func.vjp``); ``J v`` by differentiating the linear map
    ``u -> Jᵀu`` with respect to ``u``, as :func:`ggn_vector_product` does, so that neither
    product runs a forward pass."""
    primals = tuple(p.detach() for p in params)
    if not primals:
        return _constant_features(features_fn((), index))
    with torch.enable_grad():
        features, vjp_fn = torch.func.vjp(lambda *values: features_fn(values, index), *primals)
        probe = torch.zeros_like(features, requires_grad=True)
        transposed = vjp_fn(probe)

    def jvp(vector: Tensor) -> Tensor:
        with torch.enable_grad():
            tangents = unflatten(vector, primals)
            return torch.autograd.grad(transposed, probe, tangents, retain_graph=True)[0]

    def vjp(cotangent: Tensor) -> Tensor:
        return flatten(vjp_fn(cotangent))

    return LinearizedFeatures(features.detach(), jvp, vjp)


def _constant_features(features: Tensor) -> LinearizedFeatures:
    """Features that depend on no parameter (a purely linear model)."""
    features = features.detach()
    return LinearizedFeatures(
        features,
        lambda vector: features.new_zeros(features.shape),
        lambda cotangent: features.new_zeros(0),
    )


def _check_features(features: Tensor, k: int, rows: int | None) -> None:
    if not isinstance(features, Tensor) or features.dim() != 2 or features.shape[1] != k:
        raise ValueError(
            f"LinearHead.features_fn must return features of shape (n, {k}) (k = weight's "
            f"second dimension); got {describe(features)}"
        )
    if rows is not None and features.shape[0] != rows:
        raise ValueError(
            f"LinearHead.features_fn returned {features.shape[0]} rows; expected {rows} (one "
            "per sample of the batch, or of the index it was given)"
        )


# ----------------------------------------------------------------- the blocks
@dataclass(frozen=True)
class HeadBlockFisher:
    r"""The blocks of ``F + λ`` (see the module docstring) at the current parameters.

    Every sample mean is taken over this process's ``n`` samples and then passed through
    ``reduce`` (the weighted all-reduce across ranks, identity in one process).
    """

    linear: LinearizedFeatures
    augmented: Tensor  # a, (n, k+1) or (n, k)
    weight: Tensor  # W, (out, k), detached
    scaled_precision: Tensor  # h / n, (out, 1), in the features' dtype
    input_basis: Tensor  # eigenvectors of A, (k+1, k+1), float64
    head_denominator: Tensor  # h ⊗ eigenvalues(A) + λ, (out, k+1), float64
    feature_damping: float | Tensor
    reduce: Reduce

    def head_solve(self, block: Tensor) -> Tensor:
        """``(F_vv + λ)⁻¹ V`` for ``V`` ``(out, k+1)``, exactly, in float64."""
        rotated = block.double() @ self.input_basis
        return ((rotated / self.head_denominator) @ self.input_basis.T).to(block.dtype)

    def features_to_outputs(self, vector: Tensor) -> Tensor:
        """``W J v``, ``(n, out)``."""
        return self.linear.jvp(vector) @ self.weight.T

    def head_to_outputs(self, block: Tensor) -> Tensor:
        """``V aᵢ`` for every sample, ``(n, out)``."""
        return self.augmented @ block.T

    def outputs_to_features(self, tangent: Tensor) -> Tensor:
        """``(1/n) Σᵢ Jᵢᵀ Wᵀ H tᵢ``, reduced: a flat feature-parameter vector."""
        flat = self.linear.vjp(tangent @ (self.scaled_precision * self.weight))
        return self.reduce(flat) if flat.numel() else flat

    def outputs_to_head(self, tangent: Tensor) -> Tensor:
        """``(1/n) Σᵢ H tᵢ aᵢᵀ``, reduced: ``(out, k+1)``."""
        return self.reduce(self.scaled_precision * (tangent.T @ self.augmented))

    def schur_product(self, vector: Tensor) -> Tensor:
        """``S v = (F_ff + λ) v − F_fv (F_vv + λ)⁻¹ F_vf v``: one ``J`` and one ``Jᵀ``."""
        outputs = self.features_to_outputs(vector)
        head = self.head_solve(self.outputs_to_head(outputs))
        coupled = self.outputs_to_features(outputs - self.head_to_outputs(head))
        return coupled + self.feature_damping * vector


@dataclass(frozen=True)
class HeadInputs:
    """This process's part of the head block: the linearised features, ``a = [φ, 1]`` and
    its second moment ``A = aᵀa / n`` (float64; reduced over the ranks or not, as the
    caller says: see :func:`head_inputs`)."""

    linear: LinearizedFeatures
    augmented: Tensor  # a, (n, k+1) or (n, k)
    gram: Tensor  # A, (k+1, k+1), float64


def head_inputs(
    head: LinearHead, index: Tensor | None = None, rows: int | None = None
) -> HeadInputs:
    """Linearise the features on this process's samples ``index`` (all when None) and take
    their local ``A``; no communication, so a caller may reduce ``A`` with other tensors.
    ``rows``, when given, is the expected number of feature rows."""
    linear = linearize_features(head.features_fn, head.feature_params, index)
    _check_features(linear.features, head.weight.shape[1], rows)
    augmented = linear.features
    if head.bias is not None:
        augmented = torch.cat([augmented, augmented.new_ones(len(augmented), 1)], dim=1)
    wide = augmented.double()
    return HeadInputs(linear, augmented, wide.T @ wide / len(wide))


def head_block_fisher(
    head: LinearHead,
    damping: HeadParts,
    index: Tensor | None = None,
    reduce: Reduce | None = None,
    rows: int | None = None,
    reduced: HeadInputs | None = None,
) -> HeadBlockFisher:
    """Linearise the features and factor the head block ``H ⊗ A`` (``A`` reduced, in float64).

    ``damping`` holds the damping split by role (its head part must be one value); ``rows``
    is the expected number of feature rows, checked when given. ``reduced``: inputs whose
    ``A`` the caller has reduced already (then ``index`` and ``rows`` are not used).
    """
    reduce = reduce if reduce is not None else _identity
    if reduced is None:
        local = head_inputs(head, index, rows)
        reduced = HeadInputs(local.linear, local.augmented, reduce(local.gram))
    augmented = reduced.augmented
    input_values, input_basis = torch.linalg.eigh(reduced.gram)
    precision = head.precision().to(augmented.device)
    denominator = precision[:, None] * input_values.clamp(min=0.0) + _uniform(damping.head)
    scaled_precision = (precision / len(augmented)).to(augmented.dtype)[:, None]
    return HeadBlockFisher(
        reduced.linear, augmented, head.weight.detach(), scaled_precision, input_basis,
        denominator, damping.features, reduce,
    )  # fmt: skip


def _identity(tensor: Tensor) -> Tensor:
    return tensor


def _uniform(head_damping: Tensor) -> float:
    values = head_damping.flatten()
    if not bool((values == values[0]).all()):
        raise ValueError(
            "LinearHead: the head's weight and bias have different damping "
            f"({sorted(set(values.tolist()))}); the head is solved exactly in a Kronecker "
            "eigenbasis, which needs one damping for both: put them in one param group"
        )
    return float(values[0])


# ---------------------------------------------------------------------- solve
def linear_head_solve(
    head: LinearHead,
    params: Sequence[Tensor],
    rhs: Tensor,
    damping: float | Tensor = 0.0,
    iters: int = 10,
    tol: float = 1e-10,
    index: Tensor | None = None,
    reduce: Reduce | None = None,
    num_samples: int | None = None,
    reduced: HeadInputs | None = None,
) -> CGResult:
    r"""Solve ``(F + λ) s = rhs`` with the head and the diagonal block eliminated exactly.

    Conjugate gradient runs on the Schur complement over ``head.feature_params``
    (``iters`` products at most, stopping once its ``‖r‖² ≤ tol``); then
    ``s_v = (F_vv + λ)⁻¹(rhs_v − F_vf s_f)`` and ``s_d = rhs_d / (c + λ)``. Since the head and
    diagonal rows then hold exactly, the full residual ``rhs − (F + λ)s`` is the Schur
    residual on the feature parameters and 0 elsewhere, so
    ``sᵀ(F + λ)s = sᵀ(rhs − residual_vector)`` needs no further product.

    Args:
        head (LinearHead): the structure; see its conditions.
        params (sequence of Tensor): the parameters, defining the flat order of ``rhs``.
        rhs (Tensor): right-hand side, flat, e.g. ``−∇loss``.
        damping (float or Tensor, optional): ``λ``, a number or a flat per-parameter vector;
            equal over the head's weight and bias (default: 0).
        iters (int, optional): Schur-complement CG iterations, ≥ 1 (default: 10).
        tol (float, optional): CG stops once the squared residual is below it (default: 1e-10).
        index (Tensor, optional): the samples whose Fisher is used; all when None.
        reduce (callable, optional): averages a tensor over the ranks (weighted), for
            data-parallel use; identity when None.
        num_samples (int, optional): the batch size, to check the features' rows.
        reduced (HeadInputs, optional): :func:`head_inputs` with ``A`` reduced already (a
            data-parallel caller reduces it with the gradient, in one all-reduce).

    Returns:
        CGResult: the solution in ``params``' flat order, the Schur CG iterations, its final
        squared residual and the full residual vector.

    Example:
        >>> result = linear_head_solve(spec, params, -grad, damping=0.1, iters=10)
        >>> step = result.solution
    """
    layout = HeadLayout(head, params)
    damping_parts = split_damping(layout, damping, rhs)
    rows = _rows(index, num_samples)
    system = head_block_fisher(head, damping_parts, index, reduce, rows, reduced)
    parts = layout.split(rhs)
    head_rhs = system.head_solve(parts.head)
    schur_rhs = parts.features - system.outputs_to_features(system.head_to_outputs(head_rhs))
    solve = conjugate_gradient_solve(system.schur_product, schur_rhs, iters, tol)
    coupling = system.outputs_to_head(system.features_to_outputs(solve.solution))
    solution = HeadParts(
        solve.solution,
        system.head_solve(parts.head - coupling),
        parts.diagonal / (layout.diagonal_curvature.to(rhs.dtype) + damping_parts.diagonal),
    )
    residual = HeadParts(
        solve.residual_vector, torch.zeros_like(parts.head), torch.zeros_like(parts.diagonal)
    )
    return CGResult(layout.join(solution), solve.iterations, solve.residual, layout.join(residual))


def _rows(index: Tensor | None, num_samples: int | None) -> int | None:
    return len(index) if index is not None else num_samples


def linear_head_fisher_product(
    head: LinearHead,
    params: Sequence[Tensor],
    index: Tensor | None = None,
    reduce: Reduce | None = None,
    num_samples: int | None = None,
) -> Callable[[Tensor], Tensor]:
    """``v -> F v`` (undamped, flat in ``params``' order) as the head structure describes it.

    For checks and tests: the optimizer itself never multiplies by the whole ``F``.
    """
    layout = HeadLayout(head, params)
    zero = head.weight.new_zeros(())
    no_damping = HeadParts(zero, zero.reshape(1), zero)
    system = head_block_fisher(head, no_damping, index, reduce, _rows(index, num_samples))

    def product(vector: Tensor) -> Tensor:
        parts = layout.split(vector)
        outputs = system.features_to_outputs(parts.features) + system.head_to_outputs(parts.head)
        diagonal = parts.diagonal * layout.diagonal_curvature.to(vector.dtype)
        return layout.join(
            HeadParts(
                system.outputs_to_features(outputs), system.outputs_to_head(outputs), diagonal
            )
        )

    return product


def check_linear_head(
    head: LinearHead, kl: Tensor, params: Sequence[Tensor], num_samples: int | None = None
) -> None:
    """Raise ValueError unless ``head`` reproduces the Hessian of ``kl`` on a probe vector.

    One Hessian-vector product of ``kl`` (double backward) against
    :func:`linear_head_fisher_product`, on this process's batch; relative tolerance 1e-3,
    so it catches a wrong structure, not rounding. The probe comes from a private generator:
    the global random state is untouched.
    """
    params = list(params)
    size = sum(p.numel() for p in params)
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(size, generator=generator, dtype=torch.float64)
    probe = probe.to(device=kl.device, dtype=params[0].dtype)
    with torch.enable_grad():
        expected = hessian_vector_product(kl, params)(probe)
    got = linear_head_fisher_product(head, params, num_samples=num_samples)(probe)
    error = float((got - expected).norm()) / max(float(expected.norm()), 1e-30)
    if not math.isfinite(error) or error > CHECK_RELATIVE_TOLERANCE:
        raise ValueError(
            f"the closure's linear_head does not describe its KL: a Fisher product from it "
            f"differs from the KL's Hessian by {error:.3g} (relative). It needs outputs exactly "
            "linear in weight/bias, an output-space KL Hessian diag(output_precision) identical "
            "for every sample, decoupled diagonal_curvature blocks, and kl = the mean over "
            "samples of KL(old || new); see trust_region.LinearHead"
        )
