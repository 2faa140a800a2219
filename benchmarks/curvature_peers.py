"""Benchmark: our Gauss-Newton products and damped CG solves against curvlinops.

    pip install -e ".[bench]" && python benchmarks/curvature_peers.py [--repeats 5]

Three models, float32, one CPU thread, the categorical (softmax cross-entropy) Gauss-Newton
matrix ``G = (1/N) Σ Jᵀ (diag(p) − ppᵀ) J`` over all ``N`` predicted distributions, which is
the Fisher of a KL trust region at its centre:

- MLP: 64 → 256 → 256 → 10 (tanh), batch 512;
- CNN: examples/cnn_kl_update.py's classifier, 64 images 16×16;
- transformer block: examples/transformer_kl_finetune.py's language model with one stock
  ``nn.TransformerEncoderLayer`` (width 48, 4 heads), 16 sequences of 32 tokens (512
  distributions).

Rows, per model:

- ``product``: one ``G v``. Ours is ``trust_region.ggn_vector_product`` (what
  ``TrustRegionOptimizer`` runs with ``fvp="ggn"``): one forward and ``vjp`` per step
  (``setup``, reported apart and included in the solve), then two backward passes per
  product. curvlinops' ``GGNLinearOperator`` (its ``@``) recomputes the forward in each
  product. Both products are checked equal (relative difference printed).
- ``solve``: ``(G + λI) s = b`` with ``λ = 0.01``, ``b`` the cross-entropy gradient, to a
  relative residual ``‖b − (G + λI)s‖ / ‖b‖ ≤ 1e-3`` (checked afterwards with an
  independent product), from zero. Ours: ``trust_region.conjugate_gradient_solve`` including
  the setup; curvlinops: the CG its ``CGInverseLinearOperator`` uses (``linear_operator``'s
  ``linear_cg``, relative tolerance) on ``GGNLinearOperator`` plus ``λv``.
- ``ours + diag``: our CG preconditioned with ``diag(Ĝ) + λ``, ``Ĝ``'s diagonal estimated
  from one Monte-Carlo label per sequence/sample with per-sample gradients (``torch.func``),
  its cost included; kept in the library only if it pays.

Ratios are ours / curvlinops (below 1: ours faster). Never run as a test; medians of
``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import cnn_kl_update
import transformer_kl_finetune

from trust_region import (
    categorical_fisher_vp,
    conjugate_gradient_solve,
    functional_model,
    ggn_vector_product,
)
from trust_region.curvature import flat_grad
from trust_region.kernels import twice_differentiable

DAMPING, RELATIVE_TOLERANCE, MAX_ITERS = 0.01, 1e-3, 500


@dataclass(frozen=True)
class Problem:
    """A model whose forward gives logits ``(B, V)`` or ``(B, T, V)``, inputs, targets."""

    name: str
    model: nn.Module
    inputs: Tensor
    targets: Tensor

    @property
    def positions(self) -> int:
        return self.targets[0].numel()

    @property
    def terms(self) -> int:
        return self.targets.numel()


def problems() -> list[Problem]:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 256), nn.Tanh(),
                        nn.Linear(256, 10))  # fmt: skip
    images, labels = cnn_kl_update.bar_images(
        cnn_kl_update.SHIFTED, 64, torch.Generator().manual_seed(0)
    )
    vocab = 40
    lm = transformer_kl_finetune.CausalLM(vocab, layers=1)
    tokens = torch.randint(0, vocab, (16, transformer_kl_finetune.CONTEXT + 1))
    return [
        Problem("MLP", mlp, torch.randn(512, 64), torch.randint(0, 10, (512,))),
        Problem("CNN", cnn_kl_update.make_model(), images, labels),
        Problem("transformer block", lm, tokens[:, :-1], tokens[:, 1:]),
    ]


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def ours(problem: Problem) -> Callable[[Tensor], Tensor]:
    """Setup (one forward and vjp) and return the product."""
    params = list(problem.model.parameters())
    model_fn = functional_model(problem.model, params)
    return ggn_vector_product(
        lambda ps, idx: model_fn(ps, problem.inputs), categorical_fisher_vp, params, None,
        problem.terms,
    )  # fmt: skip


def curvlinops_operator(problem: Problem):
    from curvlinops import GGNLinearOperator

    class FlatLogits(nn.Module):  # curvlinops' CrossEntropyLoss wants (N, V) rows
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, inputs: Tensor) -> Tensor:
            logits = self.model(inputs)
            return logits.reshape(-1, logits.shape[-1])

    return GGNLinearOperator(
        FlatLogits(problem.model), nn.CrossEntropyLoss(), list(problem.model.parameters()),
        [(problem.inputs, problem.targets.reshape(-1))], check_deterministic=False,
    )  # fmt: skip


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls after one untimed warm-up call, and the output."""
    times, out = [], fn()
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def gradient(problem: Problem) -> Tensor:
    params = list(problem.model.parameters())
    with torch.enable_grad():
        loss = cross_entropy(problem.model(problem.inputs), problem.targets)
        return flat_grad(loss, params).detach()


def diagonal_ggn_mc(problem: Problem, generator: torch.Generator) -> Tensor:
    """Diagonal of ``G`` estimated with one sampled label per position: per-sample
    (per-sequence) gradients of ``Σₜ log p(ŷₜ)`` squared, summed, divided by the terms.
    Unbiased: cross-position terms vanish in expectation."""
    params = {k: v.detach() for k, v in problem.model.named_parameters()}
    with torch.no_grad():
        probs = problem.model(problem.inputs).softmax(-1)
    sampled = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
    sampled = sampled.reshape(probs.shape[:-1])

    def log_likelihood(values: dict[str, Tensor], inputs: Tensor, labels: Tensor) -> Tensor:
        logits = torch.func.functional_call(problem.model, values, (inputs[None],))[0]
        return logits.log_softmax(-1).gather(-1, labels[..., None]).sum()

    grads = torch.func.vmap(torch.func.grad(log_likelihood), in_dims=(None, 0, 0))(
        params, problem.inputs, sampled
    )
    squares = [grads[name].pow(2).sum(0).reshape(-1) for name in params]
    return torch.cat(squares) / problem.terms


def relative_residual(product: Callable[[Tensor], Tensor], b: Tensor, s: Tensor) -> float:
    return float((b - product(s) - DAMPING * s).norm() / b.norm())


def bench(problem: Problem, repeats: int) -> dict[str, float]:
    from linear_operator.utils.linear_cg import linear_cg

    operator = curvlinops_operator(problem)
    b = -gradient(problem)
    v = torch.randn(b.shape, generator=torch.Generator().manual_seed(1))
    setup_s, product = timed(lambda: ours(problem), repeats)
    ours_product_s, ours_gv = timed(lambda: product(v), repeats)
    tol = (RELATIVE_TOLERANCE * float(b.norm())) ** 2

    def our_solve(preconditioned: bool = False):
        fisher = ours(problem)
        preconditioner = None
        if preconditioned:
            inverse = 1.0 / (diagonal_ggn_mc(problem, torch.Generator().manual_seed(2)) + DAMPING)
            preconditioner = inverse.__mul__
        return conjugate_gradient_solve(
            lambda x: fisher(x) + DAMPING * x, b, MAX_ITERS, tol, preconditioner
        )

    def their_solve():
        return linear_cg(
            lambda x: operator @ x + DAMPING * x, b[:, None], tolerance=RELATIVE_TOLERANCE,
            max_iter=MAX_ITERS,
        )[:, 0]  # fmt: skip

    with twice_differentiable():  # curvlinops' forward-mode AD needs it as much as we do
        theirs_product_s, theirs_gv = timed(lambda: operator @ v, repeats)
        theirs_solve_s, their_solution = timed(their_solve, repeats)
    ours_solve_s, solved = timed(our_solve, repeats)
    pre_solve_s, pre_solved = timed(lambda: our_solve(True), repeats)
    agreement = float((ours_gv - theirs_gv).norm() / theirs_gv.norm())
    check = ours(problem)
    return dict(
        params=b.numel(), setup=setup_s, ours_product=ours_product_s,
        theirs_product=theirs_product_s, agreement=agreement, ours_solve=ours_solve_s,
        ours_iters=solved.iterations, ours_residual=relative_residual(check, b, solved.solution),
        pre_solve=pre_solve_s, pre_iters=pre_solved.iterations,
        pre_residual=relative_residual(check, b, pre_solved.solution),
        theirs_solve=theirs_solve_s,
        theirs_residual=relative_residual(check, b, their_solution),
    )  # fmt: skip


def print_table(rows: dict[str, dict[str, float]]) -> None:
    print(
        "| model | params | product ours / curvlinops (ms) | ratio | setup (ms) | "
        "solve ours (iters) / curvlinops (ms) | ratio | ours + diag precond. (iters) | "
        "final rel. residual ours / curvlinops / precond. |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['params']:,} | {1e3 * r['ours_product']:.2f} / "
            f"{1e3 * r['theirs_product']:.2f} | {r['ours_product'] / r['theirs_product']:.2f} | "
            f"{1e3 * r['setup']:.2f} | {1e3 * r['ours_solve']:.0f} ({r['ours_iters']}) / "
            f"{1e3 * r['theirs_solve']:.0f} | {r['ours_solve'] / r['theirs_solve']:.2f} | "
            f"{1e3 * r['pre_solve']:.0f} ({r['pre_iters']}) | {r['ours_residual']:.1e} / "
            f"{r['theirs_residual']:.1e} / {r['pre_residual']:.1e} |"
        )
    worst = max(r["agreement"] for r in rows.values())
    print(f"\nproducts agree to {worst:.1e} (relative, worst model)")


def preconditioner_sweep(problem: Problem) -> str:
    """CG iterations to the tolerance, plain against ``(diag(Ĝ) + λ)^-power`` preconditioning
    with ``Ĝ``'s diagonal averaged over ``samples`` Monte-Carlo labels (untimed)."""
    b, fisher = -gradient(problem), ours(problem)
    tol = (RELATIVE_TOLERANCE * float(b.norm())) ** 2

    def iterations(preconditioner: Callable[[Tensor], Tensor] | None) -> int:
        damped = lambda x: fisher(x) + DAMPING * x  # noqa: E731
        return conjugate_gradient_solve(damped, b, MAX_ITERS, tol, preconditioner).iterations

    cells = [f"plain {iterations(None)}"]
    for samples in (1, 16):
        seeds = range(samples)
        diagonal = sum(diagonal_ggn_mc(problem, torch.Generator().manual_seed(s)) for s in seeds)
        for power in (1.0, 0.5):
            inverse = (diagonal / samples + DAMPING) ** -power
            cells.append(f"{samples} samples, power {power}: {iterations(inverse.__mul__)}")
    return f"{problem.name}: " + "; ".join(cells)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (default: 5)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, 1 thread, float32, CPU")
    rows = {p.name: bench(p, args.repeats) for p in problems()}
    print_table(rows)
    print("\nCG iterations with diagonal-GGN preconditioning (Jacobi, power 1, or power 0.5):")
    for problem in problems()[1:]:
        print(preconditioner_sweep(problem))
    return rows


if __name__ == "__main__":
    main()
