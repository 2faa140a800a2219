"""Benchmark: Fisher-vector products and the trust-region solve, against sb3-contrib's method.

On a Gaussian MLP policy shaped like a HalfCheetah TRPO policy (17 observations, 6 actions,
tanh hidden layers, state-independent log-std; outputs ``(mean, log_std)``) it measures

(a) the time of one Fisher-vector product ``F v`` for each mode, as a multiple of one
    forward+backward pass of the policy on the batch;
(b) the time to solve ``(F + damping·I) s = −g``, where ``g`` is the gradient of the surrogate
    loss ``−mean(advantage · log π(a|s))`` (actions drawn from the policy, random advantages),
    *including setup* (forward pass, gradient, graph building), and the solution's error
    ``‖s − s*‖ / ‖s*‖`` against a float64 reference ``s*`` (conjugate gradient run to
    convergence, at most 200 iterations; its residual is printed).

The anchor is sb3-contrib's TRPO: Fisher products by double backward through the KL, reusing
the graph of ``∇KL`` across iterations, and its conjugate gradient, which starts from
``1e-4·randn`` and so spends one extra product on the initial residual; 25 iterations. (It is
written here with one ``autograd.grad`` call over all parameters, which is faster than
sb3-contrib's per-parameter loop, so the anchor is if anything flattered.) The target of issue
3 is the anchor's accuracy in at most 0.4× its time.

Our rows use ``trust_region``'s public functions, as ``TrustRegionOptimizer.step`` does:
``hessian_vector_product`` ("hessian"), ``ggn_vector_product`` ("ggn", optionally on a 20%
subsample of the batch) and ``conjugate_gradient_solve``; "ggn + K-FAC" adds a Kronecker-factored
preconditioner (:func:`kfac_preconditioner`, built from the policy's ``nn.Linear`` layers, the
kind ``TrustRegionOptimizer(preconditioner=...)`` accepts). "ggn-head (trust_region)" solves
with the output layer eliminated: the mean is linear in the output layer and its Fisher block
is exactly Kronecker, so that layer (and the log-std, whose block is ``2·I``) is eliminated
exactly and CG runs on the Schur complement over the hidden layers, which is far better
conditioned. It is the method as the library ships it: the policy described by a
``trust_region.LinearHead`` and solved by ``trust_region.linear_head_solve``, exactly what
``TrustRegionOptimizer.step`` runs when the closure's ``GGNClosureResult`` carries that
``linear_head`` (``StepResult.fvp == "ggn-head"``; the optimizer's one-off check of the
description on its first step is not timed).

CG runs every iteration asked (see ``DEFAULT_CG_TOL``); "products" counts the Fisher products
actually spent.

Usage::

    python benchmarks/fvp.py                # four cases, about 4 minutes on one thread
    python benchmarks/fvp.py --quick        # the 64×64 cases, fewer repeats, < 30 s
    python benchmarks/fvp.py --threads 4 --out fvp.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from trust_region import (
    LinearHead,
    conjugate_gradient_solve,
    diag_gaussian_fisher_vp,
    functional_model,
    ggn_vector_product,
    hessian_vector_product,
    linear_head_solve,
)

OBSERVATION_DIM = 17
ACTION_DIM = 6
DAMPING = 0.1
# Squared residual at which CG stops. sb3-contrib and TrustRegionOptimizer use 1e-10, which on
# these problems stops the anchor before its 25 iterations; 1e-30 runs every iteration asked
# unless the recursion has converged far below float32 precision (0 would let the recursion's
# residual underflow to exactly 0, and then CG divides 0 by 0 and returns NaN).
DEFAULT_CG_TOL = 1e-30
# A solve "reaches the anchor's accuracy" if its error is at most this × the anchor's: errors
# near float32's floor (about 1e-6 here) differ by rounding alone.
ACCURACY_SLACK = 1.1
ANCHOR_ITERS = 25
LIBRARY_HEAD = "ggn-head (trust_region)"
SUBSAMPLE = 0.2
REFERENCE_ITERS = 200
PRODUCTS_PER_TIMING = 10
TARGET_TIME_RATIO = 0.4

Product = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Case:
    """One benchmark problem.

    Attributes:
        name (str): shown in the table.
        hidden (int): width of the two tanh hidden layers.
        samples (int): batch size.
        init (str): "torch" (PyTorch's default ``nn.Linear`` init) or "sb3" (orthogonal, gain √2
            on hidden layers and 0.01 on the mean layer, as SB3 policies start).
        log_std (float): initial log-std of every action dimension; below 0, as later in
            training, the mean's Fisher grows as ``exp(−2 log_std)`` and CG needs more steps.
        iterations (tuple of int): CG iteration counts tried for our solves.
        schur_iterations (tuple of int): the same for "ggn-head (trust_region)".
        repeats (int): timed runs per measurement (the median is reported).
    """

    name: str
    hidden: int
    samples: int
    init: str
    log_std: float = 0.0
    iterations: tuple[int, ...] = (5, 10, 15, 20, 25)
    schur_iterations: tuple[int, ...] = (4, 6, 8, 10, 11, 12, 15)
    repeats: int = 7


SMALL, SB3_INIT, LATER, LARGE = (
    "64x64, 2048 samples, torch init",
    "64x64, 2048 samples, sb3 init",
    "64x64, 2048 samples, torch init, log_std -1",
    "256x256, 8192 samples, torch init",
)
FULL_CASES = (
    Case(SMALL, 64, 2048, "torch", repeats=9),
    Case(SB3_INIT, 64, 2048, "sb3", repeats=9),
    Case(LATER, 64, 2048, "torch", log_std=-1.0, repeats=9),
    Case(
        LARGE,
        256,
        8192,
        "torch",
        iterations=(5, 10, 15, 25),
        schur_iterations=(8, 10, 12),
        repeats=3,
    ),
)
QUICK_CASES = (
    Case(SMALL, 64, 2048, "torch", iterations=(5, 10, 15, 25), schur_iterations=(8, 11), repeats=3),
    Case(SB3_INIT, 64, 2048, "sb3", iterations=(5, 10, 25), schur_iterations=(4, 8), repeats=3),
)


# --------------------------------------------------------------------------- the problem
class GaussianPolicy(nn.Module):
    """``obs -> (mean, log_std)``: a tanh MLP for the mean and a state-independent log-std."""

    def __init__(self, hidden: int, init: str, log_std: float = 0.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(OBSERVATION_DIM, hidden),
            nn.Tanh(),
            nn.Linear(hidden, hidden),
            nn.Tanh(),
            nn.Linear(hidden, ACTION_DIM),
        )
        self.log_std = nn.Parameter(torch.full((ACTION_DIM,), log_std))
        if init == "sb3":
            linears = [m for m in self.body if isinstance(m, nn.Linear)]
            for layer, gain in zip(linears, (math.sqrt(2.0), math.sqrt(2.0), 0.01), strict=True):
                nn.init.orthogonal_(layer.weight, gain=gain)
                nn.init.zeros_(layer.bias)

    def forward(self, observations: Tensor) -> tuple[Tensor, Tensor]:
        mean = self.body(observations)
        return mean, self.log_std.expand_as(mean)


@dataclass(frozen=True)
class Batch:
    """Observations, actions drawn from the policy, advantages and the old policy's outputs."""

    observations: Tensor  # (N, 17)
    actions: Tensor  # (N, 6)
    advantages: Tensor  # (N,)
    old_mean: Tensor  # (N, 6)
    old_log_std: Tensor  # (N, 6)

    def to(self, dtype: torch.dtype) -> Batch:
        return Batch(*(getattr(self, f).to(dtype) for f in self.__dataclass_fields__))


def make_problem(case: Case, seed: int) -> tuple[GaussianPolicy, Batch]:
    """A seeded policy and a batch of ``case.samples`` observations with sampled actions."""
    torch.manual_seed(seed)
    policy = GaussianPolicy(case.hidden, case.init, case.log_std)
    observations = torch.randn(case.samples, OBSERVATION_DIM)
    with torch.no_grad():
        mean, log_std = policy(observations)
        actions = mean + torch.randn_like(mean) * log_std.exp()
    advantages = torch.randn(case.samples)
    return policy, Batch(observations, actions, advantages, mean, log_std)


def gaussian_log_prob(mean: Tensor, log_std: Tensor, actions: Tensor) -> Tensor:
    """``log N(actions; mean, exp(log_std)²)`` summed over action dimensions: ``(N,)``."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_kl(old: tuple[Tensor, Tensor], new: tuple[Tensor, Tensor]) -> Tensor:
    """``KL(old ‖ new)`` of diagonal Gaussians given as ``(mean, log_std)``: ``(N,)``."""
    (mean0, log_std0), (mean1, log_std1) = old, new
    var0, var1 = torch.exp(2 * log_std0), torch.exp(2 * log_std1)
    return (log_std1 - log_std0 + (var0 + (mean0 - mean1) ** 2) / (2 * var1) - 0.5).sum(-1)


def surrogate_and_kl(policy: GaussianPolicy, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
    """One forward pass: surrogate loss, mean KL(old ‖ new) and the policy mean."""
    mean, log_std = policy(batch.observations)
    loss = -(batch.advantages * gaussian_log_prob(mean, log_std, batch.actions)).mean()
    kl = gaussian_kl((batch.old_mean, batch.old_log_std), (mean, log_std)).mean()
    return loss, kl, mean


def flat_grad(output: Tensor, params: list[Tensor], **kwargs: Any) -> Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(output, params, **kwargs)])


# --------------------------------------------------------------- Fisher-vector products
def anchor_product(policy: GaussianPolicy, batch: Batch) -> Product:
    """sb3-contrib: ``v -> ∇(∇KL · v)``, the graph of ``∇KL`` built once and reused."""
    params = list(policy.parameters())
    _, kl, _ = surrogate_and_kl(policy, batch)
    kl_grad = flat_grad(kl, params, create_graph=True)

    def product(vector: Tensor) -> Tensor:
        return flat_grad((kl_grad * vector).sum(), params, retain_graph=True)

    return product


def fresh_double_backward_product(policy: GaussianPolicy, batch: Batch) -> Product:
    """Double backward through the KL, forward pass and ``∇KL`` graph rebuilt every product."""
    return lambda vector: anchor_product(policy, batch)(vector)


def ggn_product(policy: GaussianPolicy, batch: Batch, index: Tensor | None) -> Product:
    """``trust_region.ggn_vector_product`` on the samples ``index`` (all when None)."""
    params = list(policy.parameters())
    model_fn = functional_model(policy, params)
    observations = batch.observations

    def outputs_fn(values: tuple[Tensor, ...], idx: Tensor | None) -> Any:
        return model_fn(values, observations if idx is None else observations[idx])

    used = batch.observations.shape[0] if index is None else len(index)
    return ggn_vector_product(outputs_fn, diag_gaussian_fisher_vp, params, index, used)


def subsample_index(samples: int, fraction: float) -> Tensor:
    """A random ``fraction`` of the sample indices, as ``fvp_subsample`` draws them."""
    return torch.randperm(samples)[: max(1, math.ceil(fraction * samples))]


# ----------------------------------------------------------------- K-FAC preconditioner
@contextmanager
def record_linear_layers(module: nn.Module) -> Iterator[dict[nn.Linear, tuple[Tensor, Tensor]]]:
    """Record ``(input, output)`` of every ``nn.Linear`` in ``module`` during a forward pass."""
    records: dict[nn.Linear, tuple[Tensor, Tensor]] = {}

    def hook(layer: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        records[layer] = (inputs[0].detach(), output)  # type: ignore[index]

    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    handles = [layer.register_forward_hook(hook) for layer in linears]
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class KroneckerFactors:
    """One layer's Fisher block ``≈ G ⊗ A``, eigen-decomposed (``[W | b]`` is ``(out, in+1)``).

    Attributes:
        output_basis (Tensor): eigenvectors of ``G = E[gᵢ gᵢᵀ]``, ``gᵢ`` the output-space
            gradients of a sampled ``εᵢᵀ mean`` with ``εᵢ ~ N(0, H)``; ``(out, out)``.
        input_basis (Tensor): eigenvectors of ``A = E[aᵢ aᵢᵀ]``, ``aᵢ = [input, 1]``;
            ``(in+1, in+1)``.
        eigenvalues (Tensor): eigenvalues of ``G ⊗ A``, ``(out, in+1)``.
    """

    output_basis: Tensor
    input_basis: Tensor
    eigenvalues: Tensor


def kronecker_factors(inputs: Tensor, output_grads: Tensor) -> KroneckerFactors:
    """K-FAC factors from a layer's inputs ``(N, in)`` and sampled output gradients ``(N, out)``."""
    samples = inputs.shape[0]
    augmented = torch.cat([inputs, inputs.new_ones(samples, 1)], dim=1)
    input_values, input_basis = torch.linalg.eigh(augmented.T @ augmented / samples)
    output_values, output_basis = torch.linalg.eigh(output_grads.T @ output_grads / samples)
    eigenvalues = output_values.clamp(min=0)[:, None] * input_values.clamp(min=0)[None, :]
    return KroneckerFactors(output_basis, input_basis, eigenvalues)


def kfac_preconditioner(
    params: list[Tensor],
    factors: dict[nn.Linear, KroneckerFactors],
    damping: float,
    other_curvature: float,
) -> Product:
    """``r -> M⁻¹ r`` with ``M`` block diagonal: ``G ⊗ A + damping·I`` for each Linear layer
    (inverted exactly in its eigenbasis), ``(other_curvature + damping)·I`` for the rest
    (the log-std here, whose Fisher block is exactly ``2·I``)."""
    owner = {id(layer.weight): layer for layer in factors} | {
        id(layer.bias): layer for layer in factors
    }
    sizes = [p.numel() for p in params]

    def precondition(residual: Tensor) -> Tensor:
        pieces = dict(zip(map(id, params), torch.split(residual, sizes), strict=True))
        out = []
        for p in params:
            layer = owner.get(id(p))
            if layer is None:
                out.append(pieces[id(p)] / (other_curvature + damping))
            elif p is layer.weight:
                block = torch.cat(
                    [pieces[id(p)].view_as(p), pieces[id(layer.bias)].view(-1, 1)], dim=1
                )
                solved = _solve_kronecker(factors[layer], block, damping)
                out += [solved[:, :-1].reshape(-1), solved[:, -1]]
        return torch.cat(out)

    return precondition


def _solve_kronecker(factors: KroneckerFactors, block: Tensor, damping: float) -> Tensor:
    """``(G ⊗ A + damping·I)⁻¹ vec(block)`` for ``block`` of shape ``(out, in+1)``."""
    rotated = factors.output_basis.T @ block @ factors.input_basis
    scaled = rotated / (factors.eigenvalues + damping)
    return factors.output_basis @ scaled @ factors.input_basis.T


def sampled_output_grads(
    mean: Tensor, log_std: Tensor, records: dict[nn.Linear, tuple[Tensor, Tensor]]
) -> dict[nn.Linear, Tensor]:
    """Gradients of ``Σᵢ εᵢᵀ meanᵢ`` at each Linear output, ``εᵢ ~ N(0, diag(exp(−2 log_std)))``
    (the output-space Fisher of the mean), by one backward pass to the activations."""
    tangent = torch.randn_like(mean) * torch.exp(-log_std.detach())
    layers = list(records)
    grads = torch.autograd.grad(
        mean, [records[layer][1] for layer in layers], grad_outputs=tangent, retain_graph=True
    )
    return dict(zip(layers, grads, strict=True))


# ------------------------------------------------------------------------------ solvers
@dataclass
class Solve:
    """A solution and the number of Fisher products spent on it."""

    solution: Tensor
    products: int


def counted(product: Product) -> tuple[Product, list[int]]:
    count = [0]

    def wrapped(vector: Tensor) -> Tensor:
        count[0] += 1
        return product(vector)

    return wrapped, count


def sb3_conjugate_gradient(matvec: Product, b: Tensor, max_iter: int, tol: float) -> Tensor:
    """sb3-contrib's ``conjugate_gradient_solver``: ``x₀ = 1e-4·randn``, so ``max_iter + 1``
    products, and it returns right after the last ``x`` update."""
    x = 1e-4 * torch.randn_like(b)
    residual = b - matvec(x)
    residual_norm = residual @ residual
    if residual_norm < tol:
        return x
    direction = residual.clone()
    for i in range(max_iter):
        a_direction = matvec(direction)
        alpha = residual_norm / (direction @ a_direction)
        x += alpha * direction
        if i == max_iter - 1:
            return x
        residual -= alpha * a_direction
        new_residual_norm = residual @ residual
        if new_residual_norm < tol:
            return x
        direction = residual + (new_residual_norm / residual_norm) * direction
        residual_norm = new_residual_norm
    return x


def solve_anchor(policy: GaussianPolicy, batch: Batch, iters: int, cg_tol: float) -> Solve:
    """sb3-contrib's TRPO solve, from the forward pass to the search direction."""
    params = list(policy.parameters())
    loss, kl, _ = surrogate_and_kl(policy, batch)
    grad = flat_grad(loss, params, retain_graph=True)
    kl_grad = flat_grad(kl, params, create_graph=True)

    def damped(vector: Tensor) -> Tensor:
        return flat_grad((kl_grad * vector).sum(), params, retain_graph=True) + DAMPING * vector

    product, count = counted(damped)
    solution = sb3_conjugate_gradient(product, -grad, iters, cg_tol)
    return Solve(solution, count[0])


def solve_ours(
    policy: GaussianPolicy,
    batch: Batch,
    iters: int,
    cg_tol: float,
    *,
    mode: str,
    subsample: float = 1.0,
    kfac: bool = False,
) -> Solve:
    """What ``TrustRegionOptimizer.step`` does up to the search direction, with ``mode`` =
    "hessian" or "ggn", an optional batch subsample for the products and K-FAC."""
    params = list(policy.parameters())
    recorder = record_linear_layers(policy) if kfac else nullcontext({})
    with recorder as records:
        loss, kl, mean = surrogate_and_kl(policy, batch)
    grad = flat_grad(loss, params, retain_graph=True)
    if mode == "hessian":
        fisher = hessian_vector_product(kl, params)
    else:
        samples = batch.observations.shape[0]
        index = None if subsample >= 1.0 else subsample_index(samples, subsample)
        fisher = ggn_product(policy, batch, index)
    preconditioner = None
    if kfac:
        output_grads = sampled_output_grads(mean, policy.log_std, records)
        factors = {
            layer: kronecker_factors(records[layer][0], output_grads[layer]) for layer in records
        }
        preconditioner = kfac_preconditioner(params, factors, DAMPING, other_curvature=2.0)
    product, count = counted(lambda vector: fisher(vector) + DAMPING * vector)
    result = conjugate_gradient_solve(product, -grad, iters, cg_tol, preconditioner)
    return Solve(result.solution.detach(), count[0])


# ------------------------------------------------ the library's mode: trust_region.LinearHead
def policy_linear_head(policy: GaussianPolicy, observations: Tensor) -> LinearHead:
    """The policy's structure as ``trust_region`` takes it: features = the hidden layers, the
    mean linear in the last layer with output Hessian ``exp(−2 log_std)``, log-std block 2·I."""
    hidden_module, head = policy.body[:-1], policy.body[-1]
    feature_params = list(hidden_module.parameters())
    features = functional_model(hidden_module, feature_params)
    return LinearHead(
        features_fn=lambda values, index: features(
            values, observations if index is None else observations[index]
        ),
        feature_params=feature_params,
        weight=head.weight,
        bias=head.bias,
        output_precision=torch.exp(-2.0 * policy.log_std.detach()),
        diagonal_curvature=[(policy.log_std, 2.0)],
    )


def solve_library_head(policy: GaussianPolicy, batch: Batch, iters: int, cg_tol: float) -> Solve:
    """What ``TrustRegionOptimizer.step`` does in "ggn-head" mode up to the search direction:
    ``trust_region.linear_head_solve``. Counts the right-hand side and the back-substitution as
    one Fisher product."""
    params = list(policy.parameters())
    loss, _, _ = surrogate_and_kl(policy, batch)
    grad = flat_grad(loss, params)
    samples = batch.observations.shape[0]
    head = policy_linear_head(policy, batch.observations)
    result = linear_head_solve(head, params, -grad, DAMPING, iters, cg_tol, num_samples=samples)
    return Solve(result.solution.detach(), result.iterations + 1)


# ------------------------------------------------------------------------- the methods
@dataclass(frozen=True)
class Method:
    """A solve to time: ``run(policy, batch, iters, cg_tol)``."""

    name: str
    run: Callable[[GaussianPolicy, Batch, int, float], Solve]
    iterations: tuple[int, ...]


def methods(case: Case) -> list[Method]:
    return [
        Method("anchor: sb3-contrib", solve_anchor, (ANCHOR_ITERS,)),
        Method("hessian", partial(solve_ours, mode="hessian"), case.iterations),
        Method("ggn", partial(solve_ours, mode="ggn"), case.iterations),
        Method(
            f"ggn subsample {SUBSAMPLE}",
            partial(solve_ours, mode="ggn", subsample=SUBSAMPLE),
            case.iterations,
        ),
        Method("ggn + K-FAC", partial(solve_ours, mode="ggn", kfac=True), case.iterations),
        Method(LIBRARY_HEAD, solve_library_head, case.schur_iterations),
    ]


# ---------------------------------------------------------------------------- reference
@dataclass(frozen=True)
class Reference:
    solution: Tensor  # float32 copy of the float64 solution
    iterations: int
    relative_residual: float  # ‖(F + λI) s* + g‖ / ‖g‖ in float64


def reference_solution(policy: GaussianPolicy, batch: Batch) -> Reference:
    """``s*`` in float64: CG with the double-backward product until ``‖r‖ ≤ 1e-13 ‖g‖``
    (at most 200 iterations). On the small case this matches ``torch.linalg.solve`` of the
    explicit damped Fisher to about 1e-13."""
    policy64, batch64 = copy.deepcopy(policy).double(), batch.to(torch.float64)
    params = list(policy64.parameters())
    loss, _, _ = surrogate_and_kl(policy64, batch64)
    grad = flat_grad(loss, params)
    fisher = anchor_product(policy64, batch64)

    def damped(vector: Tensor) -> Tensor:
        return fisher(vector) + DAMPING * vector

    tol = (1e-13 * float(grad.norm())) ** 2
    result = conjugate_gradient_solve(damped, -grad, REFERENCE_ITERS, tol)
    residual = float((damped(result.solution) + grad).norm() / grad.norm())
    return Reference(result.solution.float(), result.iterations, residual)


# ------------------------------------------------------------------------------- timing
FORWARD_BACKWARD = "forward+backward"


def interleaved_medians(
    measurements: dict[Any, Callable[[], float]], repeats: int, warmup: int = 1
) -> dict[Any, float]:
    """Median of each measurement (a callable returning seconds) over ``repeats`` rounds.

    Every round runs each measurement once in turn, so a slow spell of the machine hits them
    all alike and the ratios between them stay meaningful.
    """
    for measure in measurements.values():
        for _ in range(warmup):
            measure()
    samples: dict[Any, list[float]] = {key: [] for key in measurements}
    for _ in range(repeats):
        for key, measure in measurements.items():
            samples[key].append(measure())
    return {key: statistics.median(values) for key, values in samples.items()}


def elapsed(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def forward_backward(policy: GaussianPolicy, batch: Batch) -> None:
    loss, _, _ = surrogate_and_kl(policy, batch)
    torch.autograd.grad(loss, list(policy.parameters()))


def seconds_per_product(make: Callable[[], Product], vectors: Tensor) -> float:
    """Build the product (untimed), then time it on each of ``vectors``."""
    product = make()
    return elapsed(lambda: [product(vector) for vector in vectors]) / len(vectors)


def product_timings(policy: GaussianPolicy, batch: Batch, repeats: int) -> dict[str, float]:
    """Seconds of one forward+backward pass and of one product of each mode."""
    samples = batch.observations.shape[0]
    full = torch.randn(PRODUCTS_PER_TIMING, sum(p.numel() for p in policy.parameters()))
    makers: dict[str, tuple[Callable[[], Product], Tensor]] = {
        "anchor: sb3-contrib (reused ∇KL graph)": (lambda: anchor_product(policy, batch), full),
        "hessian (trust_region)": (
            lambda: hessian_vector_product(
                surrogate_and_kl(policy, batch)[1], list(policy.parameters())
            ),
            full,
        ),
        "fresh double backward": (lambda: fresh_double_backward_product(policy, batch), full),
        "ggn": (lambda: ggn_product(policy, batch, None), full),
        f"ggn subsample {SUBSAMPLE}": (
            lambda: ggn_product(policy, batch, subsample_index(samples, SUBSAMPLE)),
            full,
        ),
    }
    measurements = {FORWARD_BACKWARD: lambda: elapsed(lambda: forward_backward(policy, batch))}
    for name, (make, vectors) in makers.items():
        measurements[name] = partial(seconds_per_product, make, vectors)
    return interleaved_medians(measurements, repeats, warmup=2)


@dataclass
class SolveRow:
    method: str
    iterations: int
    products: int
    seconds: float
    relative_error: float
    time_ratio: float = float("nan")
    meets_accuracy: bool = False


def solve_rows(
    policy: GaussianPolicy, batch: Batch, case: Case, reference: Reference, cg_tol: float
) -> list[SolveRow]:
    """Time every method at every iteration count (interleaved) and measure its error."""
    solves: dict[tuple[str, int], list[Solve]] = {}
    measurements: dict[tuple[str, int], Callable[[], float]] = {}
    for method in methods(case):
        for iters in method.iterations:
            runs = solves[method.name, iters] = []
            run = partial(method.run, policy, batch, iters, cg_tol)
            measurements[method.name, iters] = partial(
                elapsed, lambda run=run, runs=runs: runs.append(run())
            )
    seconds = interleaved_medians(measurements, case.repeats)
    rows = []
    for (name, iters), runs in solves.items():
        errors = [relative_error(s.solution, reference.solution) for s in runs]
        products = statistics.median_high(s.products for s in runs)
        rows.append(
            SolveRow(name, iters, products, seconds[name, iters], statistics.median(errors))
        )
    anchor = rows[0]
    for row in rows:
        row.time_ratio = row.seconds / anchor.seconds
        row.meets_accuracy = row.relative_error <= ACCURACY_SLACK * anchor.relative_error
    return rows


def relative_error(solution: Tensor, reference: Tensor) -> float:
    return float((solution - reference).norm() / reference.norm())


# ------------------------------------------------------------------------------ a case
@dataclass
class CaseResult:
    case: Case
    parameters: int
    forward_backward_ms: float
    product_ms: dict[str, float]
    reference_iterations: int
    reference_residual: float
    solves: list[SolveRow] = field(default_factory=list)


def run_case(case: Case, seed: int, cg_tol: float) -> CaseResult:
    policy, batch = make_problem(case, seed)
    reference = reference_solution(policy, batch)
    timings = product_timings(policy, batch, case.repeats)
    forward_backward_seconds = timings.pop(FORWARD_BACKWARD)
    torch.manual_seed(seed + 1)
    rows = solve_rows(policy, batch, case, reference, cg_tol)
    return CaseResult(
        case=case,
        parameters=sum(p.numel() for p in policy.parameters()),
        forward_backward_ms=1e3 * forward_backward_seconds,
        product_ms={name: 1e3 * seconds for name, seconds in timings.items()},
        reference_iterations=reference.iterations,
        reference_residual=reference.relative_residual,
        solves=rows,
    )


# ------------------------------------------------------------------------------ report
def format_case(result: CaseResult) -> str:
    lines = [
        f"## {result.case.name} ({result.parameters:,} parameters)",
        "",
        f"One forward+backward: {result.forward_backward_ms:.2f} ms. Reference s*: "
        f"{result.reference_iterations} float64 CG iterations, relative residual "
        f"{result.reference_residual:.1e}.",
        "",
        "| Fisher-vector product | ms | × forward+backward |",
        "|---|---:|---:|",
    ]
    for name, ms in result.product_ms.items():
        lines.append(f"| {name} | {ms:.2f} | {ms / result.forward_backward_ms:.2f} |")
    lines += [
        "",
        f"Solve (F + {DAMPING} I) s = -g, setup included:",
        "",
        "| method | CG iters | products | ms | × anchor time | ‖s−s*‖/‖s*‖ "
        f"| ≤ {ACCURACY_SLACK}× anchor error |",
        "|---|---:|---:|---:|---:|---:|:---:|",
    ]
    for row in result.solves:
        lines.append(
            f"| {row.method} | {row.iterations} | {row.products} | {1e3 * row.seconds:.1f} | "
            f"{row.time_ratio:.2f} | {row.relative_error:.2e} | "
            f"{'yes' if row.meets_accuracy else 'no'} |"
        )
    library = [row for row in result.solves if row.method == LIBRARY_HEAD]
    lines += ["", verdict(result.solves), "", verdict(result.solves[:1] + library, LIBRARY_HEAD)]
    return "\n".join(lines)


def verdict(rows: list[SolveRow], label: str = "any solve of ours") -> str:
    """Fastest of our solves (``rows[1:]``) that reaches the anchor's accuracy, against the
    0.4× target."""
    anchor, ours = rows[0], rows[1:]
    accurate = [row for row in ours if row.meets_accuracy]
    target = (
        f"Target ({TARGET_TIME_RATIO}× time at the anchor's error {anchor.relative_error:.1e}), "
        f"{label}"
    )
    if not accurate:
        return f"{target}: MISSED, none reached that error."
    best = min(accurate, key=lambda row: row.time_ratio)
    status = "MET" if best.time_ratio <= TARGET_TIME_RATIO else "MISSED"
    return (
        f"{target}: {status}; fastest that reaches it: {best.method}, {best.iterations} "
        f"iterations ({best.products} products), {best.time_ratio:.2f}× the anchor's time."
    )


def machine_info(threads: int) -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": threads,
        "dtype": "float32 (reference in float64)",
    }


def to_json(info: dict[str, Any], results: list[CaseResult]) -> dict[str, Any]:
    return {"machine": info, "cases": [asdict(result) for result in results]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64x64 cases only, fewer repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--out", help="also write the results to this JSON file")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument(
        "--cg-tol",
        type=float,
        default=DEFAULT_CG_TOL,
        help="stop CG once the squared residual is below this (default: 1e-30, every "
        "iteration; sb3-contrib and TrustRegionOptimizer use 1e-10)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[CaseResult]:
    args = parse_args(argv)
    if args.threads < 1:
        raise ValueError(f"Invalid --threads: {args.threads} (must be >= 1)")
    torch.set_num_threads(args.threads)
    info = machine_info(args.threads)
    print("# Fisher-vector product and trust-region solve benchmark")
    print()
    print(", ".join(f"{key}: {value}" for key, value in info.items()))
    results = []
    for case in QUICK_CASES if args.quick else FULL_CASES:
        results.append(run_case(case, args.seed, args.cg_tol))
        print()
        print(format_case(results[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(to_json(info, results), handle, indent=2)
    return results


if __name__ == "__main__":
    main()
