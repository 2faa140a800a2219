"""Conjugate gradient, plain and preconditioned.

Pure numerical kernels: no I/O, no globals. ``matvec`` must be symmetric positive definite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["CGResult", "conjugate_gradient", "conjugate_gradient_solve"]


@dataclass(frozen=True)
class CGResult:
    """Outcome of a conjugate-gradient solve.

    Attributes:
        solution (Tensor): the approximate solution ``x`` of ``A x = b``.
        iterations (int): matrix-vector products spent (0 when ``b`` is already ~0).
        residual (float): ``‖b - A x‖²`` as tracked by the recursion at exit.
        residual_vector (Tensor): ``b - A x`` as tracked by the recursion at exit.
    """

    solution: Tensor
    iterations: int
    residual: float
    residual_vector: Tensor


def conjugate_gradient_solve(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int = 10,
    tol: float = 1e-10,
    preconditioner: Callable[[Tensor], Tensor] | None = None,
) -> CGResult:
    """Solve ``A x = b`` by (preconditioned) conjugate gradient, starting from ``x = 0``.

    The recursion (Nocedal & Wright, Algorithm 5.3), with ``M⁻¹`` the preconditioner::

        r₀ = b, z₀ = M⁻¹ r₀, p₀ = z₀
        αₖ = rₖᵀzₖ / pₖᵀA pₖ;  xₖ₊₁ = xₖ + αₖ pₖ;  rₖ₊₁ = rₖ - αₖ A pₖ
        zₖ₊₁ = M⁻¹ rₖ₊₁;  βₖ = rₖ₊₁ᵀzₖ₊₁ / rₖᵀzₖ;  pₖ₊₁ = zₖ₊₁ + βₖ pₖ

    It stops after ``iters`` products, once ``‖r‖² ≤ tol``, or when the residual vanishes.

    Args:
        matvec (callable): ``v -> A v`` for a symmetric positive-definite ``A``.
        b (Tensor): right-hand side, 1-D.
        iters (int, optional): maximum number of products (default: 10).
        tol (float, optional): stop when the squared residual norm falls below it
            (default: 1e-10).
        preconditioner (callable, optional): ``r -> M⁻¹ r`` for a symmetric positive-definite
            approximation ``M`` of ``A`` (default: None, plain CG).

    Returns:
        CGResult: solution, number of products and final squared residual.
    """
    if iters < 1:
        raise ValueError(f"Invalid iters: {iters} (must be >= 1)")
    x = torch.zeros_like(b)
    r = b.clone()
    z = r if preconditioner is None else preconditioner(r)
    p = z.clone()
    r_dot_z = torch.dot(r, z)
    residual = torch.dot(r, r)
    products = 0
    while products < iters and residual.item() > tol:
        a_p = matvec(p)
        products += 1
        curvature = torch.dot(p, a_p)
        if not curvature.item() > 0.0:  # converged exactly, or A is not positive definite
            break
        alpha = r_dot_z / curvature
        x.add_(alpha * p)
        r.sub_(alpha * a_p)
        residual = torch.dot(r, r)
        z = r if preconditioner is None else preconditioner(r)
        new_r_dot_z = torch.dot(r, z)
        if new_r_dot_z.item() == 0.0:  # exact solution reached
            break
        beta = new_r_dot_z / r_dot_z
        p = z + beta * p
        r_dot_z = new_r_dot_z
    return CGResult(x, products, float(residual), r)


def conjugate_gradient(
    matvec: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int = 10,
    tol: float = 1e-10,
    preconditioner: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Approximately solve ``A x = b`` by conjugate gradient and return ``x``.

    Example:
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]])
        >>> x = conjugate_gradient(lambda v: A @ v, torch.tensor([1.0, 2.0]), iters=2)
        >>> torch.allclose(A @ x, torch.tensor([1.0, 2.0]))
        True

    See :func:`conjugate_gradient_solve` for the arguments and the recursion.
    """
    return conjugate_gradient_solve(matvec, b, iters, tol, preconditioner).solution
