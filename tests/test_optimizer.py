"""TrustRegionOptimizer: closed-form steps, acceptance rules, restoration, validation."""

import math

import pytest
import torch
from torch import Tensor, nn

from trust_region import (
    GGNClosureResult,
    StepResult,
    TrustRegionOptimizer,
    categorical_fisher_vp,
    functional_model,
)


# ----------------------------------------------------------------- quadratics
def quadratic_problem(n: int, seed: int, dtype: torch.dtype = torch.float64):
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    eigenvalues = torch.rand(n, generator=generator, dtype=torch.float64) * 5 + 0.1
    metric = ((q * eigenvalues) @ q.T).to(dtype)
    gradient = torch.randn(n, generator=generator, dtype=torch.float64).to(dtype)
    return metric, gradient


def quadratic_closure(theta: Tensor, metric: Tensor, gradient: Tensor):
    start = theta.detach().clone()

    def closure() -> tuple[Tensor, Tensor]:
        delta = theta - start
        return gradient @ theta, 0.5 * delta @ metric @ delta

    return closure


@pytest.mark.parametrize("seed", range(5))
def test_quadratic_step_is_the_closed_form_natural_gradient_step(seed: int) -> None:
    n, max_kl = 6, 0.02
    metric, gradient = quadratic_problem(n, seed)
    theta = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    opt = TrustRegionOptimizer([theta], max_kl=max_kl, damping=0.0, cg_iters=4 * n)
    result = opt.step(quadratic_closure(theta, metric, gradient))

    direction = -torch.linalg.solve(metric, gradient)
    expected = direction * math.sqrt(2 * max_kl / float(direction @ metric @ direction))
    step = theta.detach()
    assert result.accepted and result.step_fraction == 1.0 and result.backtracks == 0
    torch.testing.assert_close(step, expected, rtol=1e-8, atol=1e-10)
    assert 0.5 * float(step @ metric @ step) == pytest.approx(max_kl, rel=1e-9)
    assert result.kl == pytest.approx(max_kl, rel=1e-9)
    # The loss is linear: the actual improvement is the predicted one.
    assert result.expected_improvement == pytest.approx(result.loss_before - result.loss_after)


def test_per_group_damping_enters_the_solve() -> None:
    metric, gradient = quadratic_problem(4, seed=11)
    a = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    theta = torch.cat([a, b])  # noqa: F841 - documents the layout
    start = torch.zeros(4, dtype=torch.float64)

    def closure():
        joined = torch.cat([a, b])
        delta = joined - start
        return gradient @ joined, 0.5 * delta @ metric @ delta

    max_kl = 0.01
    opt = TrustRegionOptimizer(
        [{"params": [a], "damping": 0.5}, {"params": [b], "damping": 2.0}],
        max_kl=max_kl, cg_iters=20, accept_ratio=0.0,
    )  # fmt: skip
    opt.step(closure)
    damped = metric + torch.diag(torch.tensor([0.5, 0.5, 2.0, 2.0], dtype=torch.float64))
    direction = -torch.linalg.solve(damped, gradient)
    expected = direction * math.sqrt(2 * max_kl / float(direction @ damped @ direction))
    torch.testing.assert_close(torch.cat([a, b]).detach(), expected, rtol=1e-8, atol=1e-10)


def test_changed_max_kl_in_param_groups_is_honoured_next_step() -> None:
    metric, gradient = quadratic_problem(3, seed=2)
    theta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = TrustRegionOptimizer([theta], max_kl=0.01, damping=0.0, cg_iters=10)
    first = opt.step(quadratic_closure(theta, metric, gradient))
    opt.param_groups[0]["max_kl"] = 0.04
    second = opt.step(quadratic_closure(theta, metric, gradient))
    assert first.kl == pytest.approx(0.01, rel=1e-8)
    assert second.kl == pytest.approx(0.04, rel=1e-8)


# ---------------------------------------------------------------- classifiers
def classifier_problem(seed: int, dtype: torch.dtype = torch.float32):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)).to(dtype)
    x = torch.randn(128, 4, dtype=dtype)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return model, x, y


def classifier_closure(model: nn.Module, x: Tensor, y: Tensor, ggn: bool = False):
    with torch.no_grad():
        old_logits = model(x)
    old_log_probs = old_logits.log_softmax(-1)
    params = list(model.parameters())
    fn = functional_model(model, params)

    def closure():
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        kl = (old_log_probs.exp() * (old_log_probs - logits.log_softmax(-1))).sum(-1).mean()
        if not ggn:
            return loss, kl
        return GGNClosureResult(
            loss, kl, lambda ps, idx: fn(ps, x if idx is None else x[idx]),
            categorical_fisher_vp, len(x),
        )  # fmt: skip

    return closure


def snapshot(model: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def bit_identical(model: nn.Module, saved: list[Tensor]) -> bool:
    return all(torch.equal(p, s) for p, s in zip(model.parameters(), saved, strict=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ggn", [False, True])
@pytest.mark.parametrize("max_kl", [1e-3, 0.05, 5.0])
def test_accepted_steps_respect_kl_and_lower_loss_rejected_restore(dtype, ggn, max_kl) -> None:
    model, x, y = classifier_problem(seed=0, dtype=dtype)
    # A stringent acceptance ratio and few backtracks make rejections happen at large max_kl.
    opt = TrustRegionOptimizer(
        model.parameters(), max_kl=max_kl, backtrack_iters=2, accept_ratio=0.5
    )
    accepted = rejected = 0
    for _ in range(8):
        before = snapshot(model)
        closure = classifier_closure(model, x, y, ggn)
        result = opt.step(closure)
        with torch.no_grad():
            after = closure()
        loss, kl = (after.loss.detach(), after.kl.detach()) if ggn else after
        assert all(p.dtype == dtype for p in model.parameters())
        if result.accepted:
            accepted += 1
            assert float(kl) <= max_kl * (1 + 1e-6)
            assert float(kl) == pytest.approx(result.kl, rel=1e-5, abs=1e-9)
            assert float(loss) < result.loss_before
            assert result.reason is None
        else:
            rejected += 1
            assert bit_identical(model, before)
            assert result.reason in {"kl exceeded", "no improvement"}
            assert result.step_fraction == 0.0
    # Small radii make progress; a huge radius overshoots and every candidate is refused.
    assert (accepted, rejected) == ((0, 8) if max_kl == 5.0 else (8, 0))


def test_ggn_and_hessian_modes_take_the_same_step() -> None:
    results = []
    for ggn in (False, True):
        model, x, y = classifier_problem(seed=3, dtype=torch.float64)
        opt = TrustRegionOptimizer(model.parameters(), max_kl=0.01, cg_iters=15)
        result = opt.step(classifier_closure(model, x, y, ggn))
        results.append((result, snapshot(model)))
    (hessian, p_hessian), (ggn_result, p_ggn) = results
    assert (hessian.fvp, ggn_result.fvp) == ("hessian", "ggn")
    for a, b in zip(p_hessian, p_ggn, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


def test_nan_loss_is_rejected_with_nothing_changed() -> None:
    model, x, y = classifier_problem(seed=1)
    opt = TrustRegionOptimizer(model.parameters())
    before = snapshot(model)
    inner = classifier_closure(model, x, y)

    def nan_closure():
        loss, kl = inner()
        return loss * float("nan"), kl

    result = opt.step(nan_closure)
    assert not result.accepted and result.reason == "non-finite loss"
    assert bit_identical(model, before)


def test_non_finite_candidates_are_rejected_and_parameters_restored() -> None:
    model, x, y = classifier_problem(seed=2)
    opt = TrustRegionOptimizer(model.parameters(), backtrack_iters=3)
    before = snapshot(model)
    inner = classifier_closure(model, x, y)
    calls = {"n": 0}

    def closure():
        calls["n"] += 1
        loss, kl = inner()
        if calls["n"] > 1:  # every line-search candidate blows up
            return loss + float("inf"), kl
        return loss, kl

    result = opt.step(closure)
    assert not result.accepted and result.reason == "non-finite loss"
    assert result.backtracks == 3 and calls["n"] == 1 + 4
    assert bit_identical(model, before)


def test_line_search_backtracks_until_kl_fits() -> None:
    # The closure's KL is 4x the quadratic model: the full step (KL = 4 max_kl) must shrink
    # to 0.5 = 0.8**k with 0.8**(2k) * 4 <= 1, i.e. k = 4 (0.8**8 * 4 = 0.67).
    metric, gradient = quadratic_problem(3, seed=5)
    theta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    start = theta.detach().clone()

    def closure():
        delta = theta - start
        return gradient @ theta, 0.5 * delta @ metric @ delta * (1 + 3 * (delta.norm() > 0))

    opt = TrustRegionOptimizer([theta], max_kl=0.01, damping=0.0, cg_iters=10)
    result = opt.step(closure)
    assert result.accepted and result.backtracks == 4
    assert result.step_fraction == pytest.approx(0.8**4)
    assert result.kl == pytest.approx(4 * 0.01 * 0.8**8, rel=1e-8)


def test_state_dict_round_trip() -> None:
    model, x, y = classifier_problem(seed=4)
    opt = TrustRegionOptimizer(model.parameters(), max_kl=0.02, damping=0.3)
    opt.step(classifier_closure(model, x, y))
    state = opt.state_dict()
    other_model, _, _ = classifier_problem(seed=4)
    other = TrustRegionOptimizer(other_model.parameters())
    other.load_state_dict(state)
    assert other.param_groups[0]["max_kl"] == 0.02
    assert other.param_groups[0]["damping"] == 0.3
    first = next(iter(other_model.parameters()))
    assert other.state[first]["step"] == 1


def test_step_result_is_frozen() -> None:
    model, x, y = classifier_problem(seed=0)
    result = TrustRegionOptimizer(model.parameters()).step(classifier_closure(model, x, y))
    assert isinstance(result, StepResult)
    with pytest.raises(AttributeError):
        result.accepted = False  # type: ignore[misc]


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("max_kl", 0.0, "> 0"),
        ("max_kl", float("nan"), "> 0"),
        ("damping", -0.1, ">= 0"),
        ("cg_iters", 0, ">= 1"),
        ("cg_iters", 2.5, "integer"),
        ("backtrack_coeff", 1.0, r"in \(0, 1\)"),
        ("backtrack_coeff", 0.0, r"in \(0, 1\)"),
        ("backtrack_iters", -1, ">= 0"),
        ("fvp_subsample", 0.0, r"in \(0, 1\]"),
        ("fvp_subsample", 1.5, r"in \(0, 1\]"),
        ("accept_ratio", -1.0, ">= 0"),
    ],
)
def test_bad_hyperparameters_name_the_argument_and_range(name, value, allowed) -> None:
    with pytest.raises(ValueError, match=rf"Invalid {name}: .*{allowed}"):
        TrustRegionOptimizer([torch.zeros(2, requires_grad=True)], **{name: value})


def test_bad_fvp_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="Invalid fvp: 'fisher'"):
        TrustRegionOptimizer([torch.zeros(2, requires_grad=True)], fvp="fisher")


def test_groups_that_disagree_on_joint_settings_are_refused() -> None:
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(2, requires_grad=True)
    opt = TrustRegionOptimizer([{"params": [a]}, {"params": [b], "max_kl": 0.5}])
    with pytest.raises(ValueError, match="max_kl"):
        opt.step(lambda: (a.sum() + b.sum(), (a * 0).sum()))


@pytest.mark.parametrize(
    "output",
    [torch.tensor(1.0), (torch.tensor(1.0),), (torch.ones(2), torch.tensor(0.0)), (1.0, 0.0)],
)
def test_closure_must_return_two_scalar_tensors(output) -> None:
    theta = torch.zeros(2, requires_grad=True)
    with pytest.raises(TypeError, match=r"must return \(loss, kl\)"):
        TrustRegionOptimizer([theta]).step(lambda: output)


def test_kl_that_is_not_zero_at_the_start_is_refused() -> None:
    model, x, y = classifier_problem(seed=0)
    target = torch.full((len(x), 3), 1 / 3)  # not the model's own distribution

    def closure():
        logits = model(x)
        kl = (target * (target.log() - logits.log_softmax(-1))).sum(-1).mean()
        return nn.functional.cross_entropy(logits, y), kl

    before = snapshot(model)
    with pytest.raises(ValueError, match="KL at the current parameters"):
        TrustRegionOptimizer(model.parameters()).step(closure)
    assert bit_identical(model, before)


def test_ggn_mode_needs_a_ggn_closure_result() -> None:
    model, x, y = classifier_problem(seed=0)
    opt = TrustRegionOptimizer(model.parameters(), fvp="ggn")
    with pytest.raises(ValueError, match="GGNClosureResult"):
        opt.step(classifier_closure(model, x, y))
    sub = TrustRegionOptimizer(model.parameters(), fvp_subsample=0.5)
    with pytest.raises(ValueError, match="fvp_subsample"):
        sub.step(classifier_closure(model, x, y))


def test_subsampled_fisher_still_respects_the_measured_kl() -> None:
    model, x, y = classifier_problem(seed=6)
    opt = TrustRegionOptimizer(model.parameters(), max_kl=0.01, fvp_subsample=0.25)
    for _ in range(5):
        closure = classifier_closure(model, x, y, ggn=True)
        result = opt.step(closure)
        assert result.fvp == "ggn"
        if result.accepted:
            with torch.no_grad():
                assert float(closure().kl) <= 0.01 * (1 + 1e-6)


def test_exact_solve_with_zero_cg_tol_is_accepted() -> None:
    w = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    start = w.detach().clone()
    opt = TrustRegionOptimizer([w], damping=0.0, cg_iters=5, cg_tol=0.0)
    result = opt.step(lambda: (((w - 1) ** 2).sum(), 0.5 * ((w - start) ** 2).sum()))
    assert result.accepted and result.cg_iterations == 1


def test_gradient_below_cg_tol_is_rejected_with_that_reason() -> None:
    v = nn.Parameter(torch.tensor([1 - 1e-6], dtype=torch.float64))
    start = v.detach().clone()
    result = TrustRegionOptimizer([v]).step(
        lambda: (((v - 1) ** 2).sum(), 0.5 * ((v - start) ** 2).sum())
    )
    assert not result.accepted and result.reason == "gradient below cg_tol"
    assert torch.equal(v.detach(), start)


# ------------------------------------------- the classic mistake: an undetached "old" side
def _classifier_and_data():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3))
    x, y = torch.randn(256, 4), torch.randint(0, 3, (256,))
    return model, x, y


def test_an_undetached_old_side_is_refused_with_the_parameters_unchanged() -> None:
    """The README's example with ``old`` computed inside the closure, not detached."""
    model, x, y = _classifier_and_data()
    opt = TrustRegionOptimizer(model.parameters(), max_kl=0.01)
    before = [p.detach().clone() for p in model.parameters()]

    def closure():
        logits = model(x)
        old = logits.log_softmax(-1)  # the mistake: moves with the parameters
        kl = (old.exp() * (old - logits.log_softmax(-1))).sum(-1).mean()
        return torch.nn.functional.cross_entropy(logits, y), kl

    with pytest.raises(ValueError, match="'old' side is probably not detached"):
        opt.step(closure)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_an_undetached_old_side_is_refused_in_the_gauss_newton_form() -> None:
    from trust_region import GGNClosureResult, categorical_fisher_vp, functional_model

    model, x, y = _classifier_and_data()
    params = list(model.parameters())
    model_fn = functional_model(model, params)
    opt = TrustRegionOptimizer(params, max_kl=0.01)
    before = [p.detach().clone() for p in params]

    def closure():
        logits = model(x)
        old = logits.log_softmax(-1)  # the mistake
        kl = (old.exp() * (old - logits.log_softmax(-1))).sum(-1).mean()
        return GGNClosureResult(
            loss=torch.nn.functional.cross_entropy(logits, y), kl=kl,
            outputs_fn=lambda ps, idx: model_fn(ps, x if idx is None else x[idx]),
            output_fisher_vp=categorical_fisher_vp, num_samples=len(x),
        )  # fmt: skip

    with pytest.raises(ValueError, match="'old' side is probably not detached"):
        opt.step(closure)
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))


@pytest.mark.parametrize("factor", [1, 2])
def test_the_scale_check_on_a_large_batch_uses_a_subset_and_still_catches_a_wrong_count(
    factor: int,
) -> None:
    # 3,000 samples > SCALE_CHECK_SAMPLES: the check's products run on a subset of them
    from trust_region.closure import SCALE_CHECK_SAMPLES

    torch.manual_seed(0)
    x, y = torch.randn(3000, 6), torch.randint(0, 4, (3000,))
    assert len(x) > SCALE_CHECK_SAMPLES
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4))
    params = list(model.parameters())
    model_fn = functional_model(model, params)
    old = model(x).log_softmax(-1).detach()

    def closure():
        logits = model(x)
        kl = (old.exp() * (old - logits.log_softmax(-1))).sum(-1).mean()
        return GGNClosureResult(
            nn.functional.cross_entropy(logits, y), kl,
            lambda ps, idx: model_fn(ps, x if idx is None else x[idx]),
            categorical_fisher_vp, len(x) // factor,
        )  # fmt: skip

    optimizer = TrustRegionOptimizer(params, max_kl=0.01, fvp="ggn")
    before = [p.detach().clone() for p in params]
    if factor == 1:
        assert optimizer.step(closure).accepted
        return
    with pytest.raises(ValueError, match=r"KL curves 0\.[45]\d* times \(median\)"):
        optimizer.step(closure)  # num_samples half the KL's count: the products twice as large
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))


@pytest.mark.parametrize("fvp", ["ggn", "hessian"])
def test_the_step_frees_the_closures_graph_unless_hessian_products_need_it(fvp) -> None:
    """The first evaluation's graph (a whole batch's saved activations) is freed before the
    scale check, the solve and the line search evaluate the closure again, except where
    Hessian-vector products differentiate it."""
    import dataclasses
    import weakref

    model, x, y = classifier_problem(seed=0)
    base = classifier_closure(model, x, y, ggn=True)
    first_saved: list[weakref.ref] = []  # a tensor that only the first graph holds
    alive_later: list[bool] = []

    def closure():
        if first_saved:
            alive_later.append(first_saved[0]() is not None)
        result = base()
        marker = torch.ones(())
        if not first_saved:
            first_saved.append(weakref.ref(marker))
        return dataclasses.replace(result, loss=result.loss * marker)  # the graph saves it

    result = TrustRegionOptimizer(model.parameters(), max_kl=0.01, fvp=fvp).step(closure)
    # the line search's evaluations, and in "ggn" mode the first step's scale check
    assert result.accepted and len(alive_later) >= (2 if fvp == "ggn" else 1)
    assert alive_later == [fvp == "hessian"] * len(alive_later)
