"""Every solve option of TrustRegionOptimizer against an independent reference.

The references: ``torch.linalg.solve`` on the explicit damped Fisher matrix (the Hessian of
the mean KL from ``torch.autograd.functional.hessian``), and for truncated conjugate gradient
the minimiser of the quadratic model over the Krylov subspace, built from the explicit matrix.
"""

import math

import pytest
import torch
from test_head import (
    DAMPING,
    explicit_fisher,
    loss_gradient,
    make_closure,
    make_problem,
    size,
)

from trust_region import TrustRegionOptimizer

MAX_KL = 1e-4  # small enough that the quadratic model holds and the full step is accepted
STRUCTURE = {"hessian": "plain", "ggn": "ggn", "ggn-head": "head", "auto": "head"}


def flat_parameters(model) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def reference_step(model, x, actions, advantages, scaling: str = "damped") -> torch.Tensor:
    """The closed-form trust-region step: ``s = (F + λI)⁻¹(−g)`` scaled to the radius."""
    fisher = explicit_fisher(model, x)
    damped = fisher + DAMPING * torch.eye(size(model), dtype=torch.float64)
    direction = torch.linalg.solve(damped, -loss_gradient(model, x, actions, advantages))
    metric = damped if scaling == "damped" else fisher
    return direction * math.sqrt(2 * MAX_KL / float(direction @ metric @ direction))


def krylov_step(model, x, actions, advantages, iters: int) -> torch.Tensor:
    """What ``iters`` steps of CG from zero return, computed without CG: the minimiser of
    ``½ sᵀAs − bᵀs`` over span{b, Ab, …, A^(k−1)b}, scaled to the radius."""
    damped = explicit_fisher(model, x) + DAMPING * torch.eye(size(model), dtype=torch.float64)
    rhs = -loss_gradient(model, x, actions, advantages)
    vectors = [rhs]
    for _ in range(iters - 1):
        vectors.append(damped @ vectors[-1])
    basis, _ = torch.linalg.qr(torch.stack(vectors, dim=1))
    coefficients = torch.linalg.solve(basis.T @ damped @ basis, basis.T @ rhs)
    direction = basis @ coefficients
    return direction * math.sqrt(2 * MAX_KL / float(direction @ damped @ direction))


def take_step(fvp: str, seed: int = 4, **options):
    model, x, actions, advantages = make_problem(seed=seed)
    expected = {
        "damped": reference_step,
        "fisher": lambda *a: reference_step(*a, scaling="fisher"),
    }[options.get("step_scaling", "damped")](model, x, actions, advantages)
    before = flat_parameters(model)
    settings = dict(max_kl=MAX_KL, damping=DAMPING, cg_iters=300, cg_tol=0.0)
    settings.update(options)
    opt = TrustRegionOptimizer(model.parameters(), fvp=fvp, **settings)
    result = opt.step(make_closure(model, x, actions, advantages, STRUCTURE[fvp]))
    return result, flat_parameters(model) - before, expected


@pytest.mark.parametrize("fvp", ["hessian", "ggn", "ggn-head", "auto"])
def test_each_solve_takes_the_closed_form_step(fvp: str) -> None:
    result, step, expected = take_step(fvp)
    assert result.fvp == ("ggn-head" if fvp == "auto" else fvp)
    assert result.accepted and result.step_fraction == 1.0
    torch.testing.assert_close(step, expected, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("fvp", ["hessian", "ggn", "ggn-head"])
def test_fisher_scaling_puts_the_predicted_kl_at_max_kl(fvp: str) -> None:
    result, step, expected = take_step(fvp, step_scaling="fisher")
    damped_result, damped_step, _ = take_step(fvp)
    # Same direction, longer: damping no longer spends part of the radius.
    assert float(step.norm()) > 1.05 * float(damped_step.norm())
    torch.testing.assert_close(step, expected, rtol=1e-7, atol=1e-12)
    # Measured KLs (0.78 and 0.9994 of max_kl, with the old side cloned from the model: it
    # used to alias the log_std parameter, and both read ~86% of their prediction): the
    # fisher-scaled step spends the radius on KL instead of on damping.
    assert damped_result.kl < 0.85 * MAX_KL < 0.99 * MAX_KL < result.kl <= MAX_KL


@pytest.mark.parametrize("iters", [1, 3, 6])
def test_truncated_cg_takes_the_krylov_subspace_step(iters: int) -> None:
    model, x, actions, advantages = make_problem(seed=5)
    expected = krylov_step(model, x, actions, advantages, iters)
    before = flat_parameters(model)
    opt = TrustRegionOptimizer(
        model.parameters(), max_kl=MAX_KL, damping=DAMPING, cg_iters=iters, cg_tol=0.0, fvp="ggn"
    )
    result = opt.step(make_closure(model, x, actions, advantages, "ggn"))
    assert result.accepted and result.cg_iterations == iters
    torch.testing.assert_close(flat_parameters(model) - before, expected, rtol=1e-6, atol=1e-12)


def test_truncated_cg_differs_from_the_exact_step_when_the_system_needs_more() -> None:
    """The reason the options are documented: a short CG is a different step."""
    _, exact_step, _ = take_step("ggn")
    _, short_step, _ = take_step("ggn", cg_iters=2)
    cosine = float(exact_step @ short_step / exact_step.norm() / short_step.norm())
    assert cosine < 0.99


def test_ggn_ignores_a_linear_head_and_runs_plain_cg() -> None:
    model, x, actions, advantages = make_problem(seed=6)
    opt = TrustRegionOptimizer(model.parameters(), max_kl=MAX_KL, cg_iters=7, cg_tol=0.0, fvp="ggn")
    result = opt.step(make_closure(model, x, actions, advantages, "head"))
    assert result.fvp == "ggn" and result.cg_iterations == 7


def test_ggn_head_without_a_linear_head_is_refused_by_name() -> None:
    model, x, actions, advantages = make_problem(seed=6)
    opt = TrustRegionOptimizer(model.parameters(), fvp="ggn-head")
    with pytest.raises(ValueError, match=r"fvp='ggn-head' needs .* linear_head"):
        opt.step(make_closure(model, x, actions, advantages, "ggn"))
    with pytest.raises(ValueError, match=r"fvp='ggn-head' needs .*GGNClosureResult"):
        opt.step(make_closure(model, x, actions, advantages, "plain"))


def test_invalid_step_scaling_names_the_allowed_values() -> None:
    model, *_ = make_problem()
    with pytest.raises(ValueError, match=r"Invalid step_scaling: 'kl' \(must be one of"):
        TrustRegionOptimizer(model.parameters(), step_scaling="kl")


def test_a_state_dict_saved_before_step_scaling_existed_loads_as_damped() -> None:
    model, *_ = make_problem()
    opt = TrustRegionOptimizer(model.parameters())
    state = opt.state_dict()
    for group in state["param_groups"]:
        del group["step_scaling"]
    fresh = TrustRegionOptimizer(model.parameters(), step_scaling="fisher")
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["step_scaling"] == "damped"
