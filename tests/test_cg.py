"""Conjugate gradient against torch.linalg.solve."""

import pytest
import torch

from trust_region import conjugate_gradient, conjugate_gradient_solve


def random_spd(n: int, dtype: torch.dtype, seed: int, condition: float = 50.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    eigenvalues = torch.logspace(0, torch.log10(torch.tensor(condition)).item(), n).double()
    return ((q * eigenvalues) @ q.T).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cg_matches_linalg_solve(dtype: torch.dtype, seed: int) -> None:
    n = 12
    matrix = random_spd(n, dtype, seed)
    b = torch.randn(n, generator=torch.Generator().manual_seed(100 + seed), dtype=dtype)
    x = conjugate_gradient(lambda v: matrix @ v, b, iters=3 * n, tol=0.0)
    expected = torch.linalg.solve(matrix, b)
    tolerance = 1e-4 if dtype == torch.float32 else 1e-10
    assert x.dtype == dtype
    torch.testing.assert_close(x, expected, rtol=tolerance, atol=tolerance)


def test_preconditioned_and_plain_cg_reach_the_same_solution() -> None:
    n = 20
    matrix = random_spd(n, torch.float64, seed=3, condition=1e4)
    scales = torch.logspace(-2, 2, n, dtype=torch.float64)
    matrix = scales[:, None] * matrix * scales[None, :]  # badly scaled
    b = torch.randn(n, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    expected = torch.linalg.solve(matrix, b)
    diagonal = torch.diagonal(matrix)
    plain = conjugate_gradient_solve(lambda v: matrix @ v, b, iters=200, tol=1e-24)
    preconditioned = conjugate_gradient_solve(
        lambda v: matrix @ v, b, iters=200, tol=1e-24, preconditioner=lambda r: r / diagonal
    )
    torch.testing.assert_close(plain.solution, expected, rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(preconditioned.solution, expected, rtol=1e-7, atol=1e-9)
    # On a badly scaled system the Jacobi preconditioner needs far fewer products.
    assert preconditioned.iterations < plain.iterations


def test_cg_residual_vector_is_b_minus_a_x() -> None:
    matrix = random_spd(8, torch.float64, seed=5)
    b = torch.randn(8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    result = conjugate_gradient_solve(lambda v: matrix @ v, b, iters=4, tol=0.0)
    assert result.iterations == 4
    torch.testing.assert_close(result.residual_vector, b - matrix @ result.solution)
    assert result.residual == pytest.approx(float(result.residual_vector @ result.residual_vector))


def test_cg_stops_at_tolerance_and_on_zero_rhs() -> None:
    matrix = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    zero = conjugate_gradient_solve(lambda v: matrix @ v, torch.zeros(3, dtype=torch.float64))
    assert zero.iterations == 0
    assert torch.equal(zero.solution, torch.zeros(3, dtype=torch.float64))
    # Three distinct eigenvalues: exact after three products, then the tolerance stops it.
    b = torch.ones(3, dtype=torch.float64)
    result = conjugate_gradient_solve(lambda v: matrix @ v, b, iters=50, tol=1e-20)
    assert result.iterations == 3
    torch.testing.assert_close(result.solution, torch.tensor([1.0, 0.5, 1 / 3]).double())


def test_cg_rejects_zero_iterations() -> None:
    with pytest.raises(ValueError, match="iters"):
        conjugate_gradient(lambda v: v, torch.ones(2), iters=0)


def test_cg_with_zero_tolerance_stops_cleanly_after_an_exact_solve() -> None:
    # Regression: the residual reaches exactly 0 and 0/0 used to give NaN.
    result = conjugate_gradient_solve(lambda v: v, torch.ones(3), iters=3, tol=0.0)
    assert result.iterations == 1
    torch.testing.assert_close(result.solution, torch.ones(3))
