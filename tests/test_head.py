"""The head-eliminated solve ("ggn-head") against explicit Fisher matrices and the other modes."""

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

from trust_region import (
    GGNClosureResult,
    LinearHead,
    TrustRegionOptimizer,
    conjugate_gradient_solve,
    diag_gaussian_fisher_vp,
    functional_model,
    ggn_vector_product,
    linear_head_fisher_product,
    linear_head_solve,
)
from trust_region.curvature import flat_grad, flatten, unflatten

N, IN, HIDDEN, OUT = 48, 5, 6, 3
DAMPING = 0.1


class GaussianMLP(nn.Module):
    """``x -> (mean, log_std)``: tanh features, a linear head and a state-independent log-std."""

    def __init__(self, hidden_layers: int = 2, bias: bool = True, hidden: int = HIDDEN) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = IN
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, hidden), nn.Tanh()]
            width = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, OUT, bias=bias)
        self.log_std = nn.Parameter(torch.zeros(OUT))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean = self.head(self.body(x))
        return mean, self.log_std.expand_as(mean)


def gaussian_kl(old: tuple[Tensor, Tensor], new: tuple[Tensor, Tensor]) -> Tensor:
    (mean0, log_std0), (mean1, log_std1) = old, new
    var0, var1 = torch.exp(2 * log_std0), torch.exp(2 * log_std1)
    return (log_std1 - log_std0 + (var0 + (mean0 - mean1) ** 2) / (2 * var1) - 0.5).sum(-1)


def log_prob(mean: Tensor, log_std: Tensor, actions: Tensor) -> Tensor:
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z**2 - log_std).sum(-1)


def make_problem(
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    samples: int = N,
    init_std: float | None = 0.6,
    log_std: float = -0.35,
    **kwargs,
):
    """A seeded model, inputs, actions drawn from it and advantages. ``init_std``: weights
    drawn from N(0, init_std²) (a non-trivial net: features and means of order one), or
    None for PyTorch's default init (what a fresh policy looks like)."""
    torch.manual_seed(seed)
    model = GaussianMLP(**kwargs).to(dtype)
    with torch.no_grad():
        if init_std is not None:
            for p in model.parameters():
                p.normal_(0.0, init_std)
        model.log_std.copy_(torch.linspace(log_std - 0.45, log_std + 0.45, OUT))
    x = torch.randn(samples, IN, dtype=dtype)
    with torch.no_grad():
        mean, log_std = model(x)
        actions = mean + torch.randn_like(mean) * log_std.exp()
    advantages = torch.randn(samples, dtype=dtype)
    return model, x, actions, advantages


def linear_head(model: GaussianMLP, x: Tensor, log_std_curvature: float = 2.0) -> LinearHead:
    feature_params = list(model.body.parameters())
    body_fn = functional_model(model.body, feature_params)
    return LinearHead(
        features_fn=lambda ps, idx: body_fn(ps, x if idx is None else x[idx]),
        feature_params=feature_params,
        weight=model.head.weight,
        bias=model.head.bias,
        output_precision=torch.exp(-2.0 * model.log_std.detach()),
        diagonal_curvature=[(model.log_std, log_std_curvature)],
    )


def make_closure(model, x, actions, advantages, structure="head", **head_kwargs):
    """``structure``: "head" (GGNClosureResult with linear_head), "ggn" or "plain"."""
    with torch.no_grad():  # cloned: the model's log_std output is a view of the parameter
        old = tuple(t.clone() for t in model(x))
    old_log_prob = log_prob(*old, actions)
    params = list(model.parameters())
    model_fn = functional_model(model, params)
    head = linear_head(model, x, **head_kwargs) if structure == "head" else None

    def closure():
        mean, log_std = model(x)
        ratio = torch.exp(log_prob(mean, log_std, actions) - old_log_prob)
        loss = -(ratio * advantages).mean()
        kl = gaussian_kl(old, (mean, log_std)).mean()
        if structure == "plain":
            return loss, kl
        return GGNClosureResult(
            loss, kl, lambda ps, idx: model_fn(ps, x if idx is None else x[idx]),
            diag_gaussian_fisher_vp, len(x), linear_head=head,
        )  # fmt: skip

    return closure


def explicit_fisher(model: GaussianMLP, x: Tensor) -> Tensor:
    """Hessian of the mean KL at the current parameters (``model.parameters()`` order)."""
    params = list(model.parameters())
    fn = functional_model(model, params)
    with torch.no_grad():
        old = model(x)

    def mean_kl(flat: Tensor) -> Tensor:
        return gaussian_kl(old, fn(unflatten(flat, params), x)).mean()

    return torch.autograd.functional.hessian(mean_kl, flatten([p.detach() for p in params]))


def loss_gradient(model: GaussianMLP, x, actions, advantages) -> Tensor:
    closure = make_closure(model, x, actions, advantages, "plain")
    loss, _ = closure()
    return flat_grad(loss, list(model.parameters())).detach()


def size(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------- the solve itself
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("hidden_layers", [0, 1, 2])
def test_head_solve_matches_linalg_solve_of_the_explicit_damped_fisher(bias, hidden_layers):
    # hidden_layers=0: the features are the inputs, a linear model with nothing left for CG.
    model, x, actions, advantages = make_problem(
        hidden_layers, bias=bias, hidden_layers=hidden_layers
    )
    params = list(model.parameters())
    rhs = -loss_gradient(model, x, actions, advantages)
    damped = explicit_fisher(model, x) + DAMPING * torch.eye(size(model), dtype=torch.float64)
    expected = torch.linalg.solve(damped, rhs)

    result = linear_head_solve(linear_head(model, x), params, rhs, DAMPING, iters=200, tol=0.0)
    torch.testing.assert_close(result.solution, expected, rtol=1e-8, atol=1e-10)
    # The returned residual is the full system's: sᵀ(F + λ)s without another product.
    curvature = result.solution @ (rhs - result.residual_vector)
    assert float(curvature) == pytest.approx(float(expected @ damped @ expected), rel=1e-10)


def test_parameters_may_come_in_any_order() -> None:
    model, x, actions, advantages = make_problem(seed=3)
    params = list(model.parameters())
    order = [4, 0, 6, 2, 5, 1, 3]  # log_std, head and body tensors interleaved
    shuffled = [params[i] for i in order]
    rhs = -loss_gradient(model, x, actions, advantages)
    pieces = unflatten(rhs, params)
    shuffled_rhs = flatten([pieces[i] for i in order])
    expected = torch.linalg.solve(
        explicit_fisher(model, x) + DAMPING * torch.eye(len(rhs), dtype=torch.float64), rhs
    )

    got = linear_head_solve(linear_head(model, x), shuffled, shuffled_rhs, DAMPING, 200, 0.0)
    got_pieces = unflatten(got.solution, shuffled)
    by_position = {i: piece for i, piece in zip(order, got_pieces, strict=True)}
    restored = flatten([by_position[i] for i in range(len(params))])
    torch.testing.assert_close(restored, expected, rtol=1e-8, atol=1e-10)


def test_head_fisher_product_matches_the_explicit_fisher() -> None:
    model, x, _, _ = make_problem(seed=4)
    params = list(model.parameters())
    fisher = explicit_fisher(model, x)
    product = linear_head_fisher_product(linear_head(model, x), params)
    for seed in range(3):
        v = torch.randn(len(fisher), generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(product(v.double()), fisher @ v.double(), rtol=1e-9, atol=1e-12)


def test_per_parameter_damping_enters_every_block() -> None:
    model, x, actions, advantages = make_problem(seed=5)
    params = list(model.parameters())
    role_damping = {id(model.log_std): 1.5, id(model.head.weight): 0.05, id(model.head.bias): 0.05}
    damping = torch.cat(
        [torch.full((p.numel(),), role_damping.get(id(p), 0.3), dtype=p.dtype) for p in params]
    )
    rhs = -loss_gradient(model, x, actions, advantages)
    expected = torch.linalg.solve(explicit_fisher(model, x) + torch.diag(damping), rhs)
    got = linear_head_solve(linear_head(model, x), params, rhs, damping, 200, 0.0)
    torch.testing.assert_close(got.solution, expected, rtol=1e-8, atol=1e-10)


def test_subsampled_solve_is_the_solve_of_the_subsample_fisher() -> None:
    model, x, actions, advantages = make_problem(seed=6)
    index = torch.tensor([0, 3, 4, 9, 17, 20, 21, 30, 41, 47])
    params = list(model.parameters())
    rhs = -loss_gradient(model, x, actions, advantages)
    damped = explicit_fisher(model, x[index]) + DAMPING * torch.eye(len(rhs), dtype=torch.float64)
    got = linear_head_solve(linear_head(model, x), params, rhs, DAMPING, 200, 0.0, index=index)
    torch.testing.assert_close(got.solution, torch.linalg.solve(damped, rhs), rtol=1e-8, atol=1e-10)


def solve_error(solution: Tensor, exact: Tensor) -> float:
    return float((solution - exact).norm() / exact.norm())


@pytest.mark.parametrize("iters", [5, 8])
def test_few_head_iterations_are_far_more_accurate_than_plain_cg(iters: int) -> None:
    # A freshly initialised policy with log-std about -1: the head makes F ill-conditioned.
    model, x, actions, advantages = make_problem(
        7, samples=256, init_std=None, log_std=-1.0, hidden=8
    )
    params = list(model.parameters())
    rhs = -loss_gradient(model, x, actions, advantages)
    exact = torch.linalg.solve(
        explicit_fisher(model, x) + DAMPING * torch.eye(len(rhs), dtype=torch.float64), rhs
    )
    ggn = ggn_vector_product(
        lambda ps, idx: functional_model(model, params)(ps, x), diag_gaussian_fisher_vp,
        params, None, len(x),
    )  # fmt: skip
    plain = conjugate_gradient_solve(lambda v: ggn(v) + DAMPING * v, rhs, iters, 0.0)
    head = linear_head_solve(linear_head(model, x), params, rhs, DAMPING, iters, 0.0)
    assert plain.iterations == head.iterations == iters
    assert solve_error(head.solution, exact) < 0.1 * solve_error(plain.solution, exact)


# ------------------------------------------------------------------ the optimizer
@pytest.mark.parametrize("fvp", ["auto", "ggn-head"])
def test_optimizer_head_step_equals_the_hessian_step(fvp: str) -> None:
    steps, results = [], []
    for structure, iters in (("plain", 300), ("head", 60)):
        model, x, actions, advantages = make_problem(seed=8)
        opt = TrustRegionOptimizer(
            model.parameters(), max_kl=0.01, cg_iters=iters, cg_tol=0.0,
            fvp="hessian" if structure == "plain" else fvp,
        )  # fmt: skip
        results.append(opt.step(make_closure(model, x, actions, advantages, structure)))
        steps.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    hessian, head = results
    assert (hessian.fvp, head.fvp) == ("hessian", "ggn-head")
    assert hessian.accepted and head.accepted
    assert head.cg_iterations == 60
    torch.testing.assert_close(steps[1], steps[0], rtol=1e-8, atol=1e-10)
    assert head.kl == pytest.approx(hessian.kl, rel=1e-8)


def test_head_mode_with_per_group_damping_equals_the_hessian_mode() -> None:
    steps = []
    for structure in ("plain", "head"):
        model, x, actions, advantages = make_problem(seed=9)
        groups = [
            {"params": list(model.body.parameters()), "damping": 0.3},
            {"params": list(model.head.parameters()), "damping": 0.05},
            {"params": [model.log_std], "damping": 1.0},
        ]
        opt = TrustRegionOptimizer(groups, max_kl=0.01, cg_iters=300, cg_tol=0.0)
        assert opt.step(make_closure(model, x, actions, advantages, structure)).accepted
        steps.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(steps[1], steps[0], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_head_mode_steps_respect_kl_and_rejections_restore_bit_for_bit(dtype) -> None:
    for max_kl, accepted in ((0.01, True), (50.0, False)):
        model, x, actions, advantages = make_problem(seed=10, dtype=dtype)
        opt = TrustRegionOptimizer(
            model.parameters(), max_kl=max_kl, cg_iters=10, backtrack_iters=2, accept_ratio=0.9
        )
        before = [p.detach().clone() for p in model.parameters()]
        closure = make_closure(model, x, actions, advantages)
        result = opt.step(closure)
        assert result.fvp == "ggn-head" and result.accepted is accepted
        if accepted:
            with torch.no_grad():
                assert float(closure().kl) <= max_kl * (1 + 1e-6)
            assert result.loss_after < result.loss_before
        else:
            assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_subsampled_head_mode_keeps_the_measured_kl() -> None:
    model, x, actions, advantages = make_problem(seed=11, samples=128)
    opt = TrustRegionOptimizer(model.parameters(), max_kl=0.01, fvp_subsample=0.25)
    for _ in range(3):
        closure = make_closure(model, x, actions, advantages)
        result = opt.step(closure)
        assert result.fvp == "ggn-head"
        if result.accepted:
            with torch.no_grad():
                assert float(closure().kl) <= 0.01 * (1 + 1e-6)


# ------------------------------------------------------------------ bad specs
def spec_with(model: GaussianMLP, x: Tensor, **changes) -> LinearHead:
    fields = dict(linear_head(model, x).__dict__)
    fields.update(changes)
    return LinearHead(**fields)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: {"weight": m.head.bias}, "weight must be a 2-D tensor"),
        (lambda m: {"bias": m.log_std[:2]}, r"bias must be None or a tensor of shape \(3,\)"),
        (lambda m: {"output_precision": torch.tensor([1.0, -1.0, 1.0])}, "finite and > 0"),
        (lambda m: {"output_precision": torch.ones(4)}, r"broadcastable to \(3,\)"),
        (lambda m: {"diagonal_curvature": [(m.log_std, -2.0)]}, "finite and >= 0"),
        (lambda m: {"diagonal_curvature": [m.log_std]}, r"\(parameter, curvature\) pairs"),
        (lambda m: {"features_fn": None}, "features_fn must be callable"),
    ],
)
def test_malformed_linear_head_is_refused(change, message) -> None:
    model, x, _, _ = make_problem()
    with pytest.raises(ValueError, match=message):
        spec_with(model, x, **change(model))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: {"diagonal_curvature": []}, "in none of feature_params"),
        (lambda m: {"feature_params": list(m.body.parameters())[1:]}, "in none of"),
        (lambda m: {"diagonal_curvature": [(m.log_std, 2.0), (m.head.bias, 0.0)]}, "named twice"),
        (lambda m: {"diagonal_curvature": [(nn.Parameter(torch.zeros(2)), 1.0)]}, "not one of"),
        (lambda m: {"features_fn": lambda ps, idx: torch.zeros(N, 4)}, r"shape \(n, 6\)"),
        (lambda m: {"features_fn": lambda ps, idx: torch.zeros(N - 1, HIDDEN)}, "expected 48"),
    ],
)
def test_linear_head_that_does_not_fit_the_parameters_is_refused(change, message) -> None:
    model, x, actions, advantages = make_problem()
    spec = spec_with(model, x, **change(model))
    rhs = -loss_gradient(model, x, actions, advantages)
    with pytest.raises(ValueError, match=message):
        linear_head_solve(spec, list(model.parameters()), rhs, DAMPING, num_samples=N)


def test_linear_head_that_misdescribes_the_kl_is_caught_on_the_first_step() -> None:
    model, x, actions, advantages = make_problem()
    before = [p.detach().clone() for p in model.parameters()]
    closure = make_closure(model, x, actions, advantages, log_std_curvature=1.0)  # truth: 2.0
    with pytest.raises(ValueError, match="does not describe its KL"):
        TrustRegionOptimizer(model.parameters()).step(closure)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))


def test_different_damping_on_head_weight_and_bias_is_refused() -> None:
    model, x, actions, advantages = make_problem()
    groups = [
        {"params": [*model.body.parameters(), model.head.weight, model.log_std]},
        {"params": [model.head.bias], "damping": 0.5},
    ]
    opt = TrustRegionOptimizer(groups)
    with pytest.raises(ValueError, match="weight and bias have different damping"):
        opt.step(make_closure(model, x, actions, advantages))


def test_preconditioner_with_a_linear_head_is_refused() -> None:
    model, x, actions, advantages = make_problem()
    opt = TrustRegionOptimizer(model.parameters(), preconditioner=lambda r: r)
    with pytest.raises(ValueError, match="preconditioner"):
        opt.step(make_closure(model, x, actions, advantages))


def test_closure_result_refuses_a_linear_head_of_the_wrong_type() -> None:
    with pytest.raises(ValueError, match=r"must be a trust_region\.LinearHead"):
        GGNClosureResult(
            torch.tensor(0.0), torch.tensor(0.0), lambda ps, idx: ps, lambda o, t: t, 1,
            linear_head="head",  # type: ignore[arg-type]
        )  # fmt: skip


# ------------------------------------------------------------------ two ranks
SIZES = (40, 88)  # unequal shares: every average must be weighted by sample count


def run_steps(model, x, actions, advantages, steps=3, **kwargs):
    opt = TrustRegionOptimizer(model.parameters(), max_kl=0.02, cg_iters=4, **kwargs)
    results = []
    for _ in range(steps):
        closure = make_closure(model, x, actions, advantages)
        results.append(opt.step(closure, num_samples=len(x)))
    return results, [p.detach().clone() for p in model.parameters()]


def worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    # A file rendezvous: no port to pick (a free port can be taken before rank 0 binds it).
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model, x, actions, advantages = make_problem(seed=12, samples=sum(SIZES))
        shard = slice(sum(SIZES[:rank]), sum(SIZES[: rank + 1]))
        results, params = run_steps(
            model, x[shard], actions[shard], advantages[shard],
            process_group=dist.group.WORLD, sync_check_every=1,
        )  # fmt: skip
        torch.save(
            {"params": params, "kl": [r.kl for r in results], "fvp": [r.fvp for r in results]},
            f"{out}.{rank}",
        )
        dist.barrier()  # no rank tears the group down while the other still talks to it
    except BaseException:
        dist.destroy_process_group()
        raise
    # Done and saved: leave without gloo's teardown, which has aborted a spawned rank at
    # exit ("terminate called without an active exception", seen in full runs).
    os._exit(0)


def test_two_ranks_take_the_single_process_head_step(tmp_path: Path) -> None:
    model, x, actions, advantages = make_problem(seed=12, samples=sum(SIZES))
    single, expected = run_steps(model, x, actions, advantages)
    assert all(r.accepted and r.fvp == "ggn-head" for r in single)

    out = str(tmp_path / "rank")
    store = str(tmp_path / "rendezvous")
    mp.start_processes(worker, args=(store, out), nprocs=2, start_method="spawn")
    for rank in range(2):
        saved = torch.load(f"{out}.{rank}", weights_only=True)
        assert saved["fvp"] == ["ggn-head"] * 3
        for got, want in zip(saved["params"], expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
        assert saved["kl"] == pytest.approx([r.kl for r in single], rel=1e-9)


def test_log_std_block_is_exactly_two() -> None:
    """The premise of ``diagonal_curvature=[(log_std, 2.0)]``: the KL's log-std block is 2·I
    and couples to nothing."""
    model, x, _, _ = make_problem(seed=13)
    fisher = explicit_fisher(model, x)
    assert next(iter(model.parameters())) is model.log_std  # registered first
    torch.testing.assert_close(fisher[:OUT, :OUT], 2.0 * torch.eye(OUT, dtype=torch.float64))
    assert float(fisher[:OUT, OUT:].abs().max()) == 0.0


def test_curvatures_given_as_numbers_live_on_the_parameters_device() -> None:
    # a number's curvature is made on the CPU: on a GPU the head products mixed devices
    # (seen on an H100 with the Pendulum preset's log-std). The meta device stands in here.
    from trust_region.head_layout import HeadLayout

    weight = torch.zeros(2, 3, device="meta", requires_grad=True)
    log_std = torch.zeros(2, device="meta", requires_grad=True)
    head = LinearHead(
        lambda values, index: None, [], weight, None, 1.0, diagonal_curvature=[(log_std, 2.0)]
    )
    assert HeadLayout(head, [weight, log_std]).diagonal_curvature.device.type == "meta"
    assert head.precision().device.type == "meta"
