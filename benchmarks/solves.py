"""Do the policy-step solves take the same step? Same weights, same batch, every solve.

Trains the preset for ``--iterations`` iterations and, at the chosen ones, solves the
iteration's policy step again from the same parameters and batch with each of
TrustRegionOptimizer's options (fvp "ggn-head", "ggn" and "hessian" at several CG
iteration counts), and prints, for each, the full step's norm (and its split between the
hidden layers and the head with the log-std), the cosine to a reference solved to CG's
tolerance (plain Gauss-Newton CG, up to 200 iterations), the quadratic model's KL spent on
damping, and the linear prediction of the surrogate's improvement.

    python benchmarks/solves.py --env HalfCheetah-v5 --at 1 20 60 140
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import torch

import rl
import rl.trpo
from rl.surrogate import make_policy_closure
from trust_region.curvature import flat_grad
from trust_region.distributed import WeightedReducer

SOLVES = (  # name, fvp mode, CG iterations (None: the preset's)
    ("ggn-head", "ggn-head", None),
    ("ggn cg10", "ggn", 10),
    ("ggn cg25", "ggn", 25),
    ("hessian cg25", "hessian", 25),
    ("reference", "ggn", 200),
)


def solve_step(
    agent: rl.TRPO, batch, mode: str, cg_iters: int
) -> tuple[torch.Tensor, float, float]:
    """The full (unscaled by the line search) step of one solve and its damping share."""
    optimizer, params = agent.policy_optimizer, agent._policy_parameters
    settings = {**optimizer._joint_settings(), "cg_iters": cg_iters}
    closure = make_policy_closure(agent.policy, batch, None if mode == "hessian" else params)
    with torch.enable_grad():
        output = closure()
        ggn = None if isinstance(output, tuple) else output
        loss, kl = output if ggn is None else (ggn.loss, ggn.kl)
        if ggn is not None and mode == "ggn":
            ggn = dataclasses.replace(ggn, linear_head=None)
        gradient = flat_grad(loss, params, retain_graph=True)
        reducer = WeightedReducer(None, 1, gradient.device)
        solve = optimizer._solve(mode, settings, kl, ggn, params, -gradient, reducer)
    direction = solve.solution
    curvature = float(direction @ (-gradient - solve.residual_vector))
    step = direction * math.sqrt(2 * settings["max_kl"] / curvature)
    damping_share = (
        optimizer.param_groups[0]["damping"] * float(step @ step) / (2 * settings["max_kl"])
    )
    return step, float(-(gradient @ step)), damping_share


def report(agent: rl.TRPO, batch) -> None:
    agent.iteration += 1  # shown as the iteration whose step this is
    try:
        _report(agent, batch)
    finally:
        agent.iteration -= 1


def _report(agent: rl.TRPO, batch) -> None:
    hidden = sum(p.numel() for p in agent.policy.network[:-1].parameters())
    steps = {name: solve_step(agent, batch, mode, iters or agent.config.cg_iters)
             for name, mode, iters in SOLVES}  # fmt: skip
    reference = steps["reference"][0]
    for name, (step, improvement, damping_share) in steps.items():
        cosine = float(step @ reference / (step.norm() * reference.norm()))
        print(f"| {agent.iteration} | {name} | {float(step.norm()):.4f} | "
              f"{float(step[:hidden].norm()):.4f} / {float(step[hidden:].norm()):.4f} | "
              f"{cosine:.5f} | {damping_share:.2f} | {improvement:.5f} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--at", nargs="+", type=int, default=[1, 20, 60])
    args = parser.parse_args()
    config = rl.TRPOConfig.from_preset(
        args.env, source="zoo", seed=args.seed, total_steps=2048 * max(args.at),
        value_fit_in_background=False,
    )  # fmt: skip
    agent = rl.TRPO(config)
    print(
        "| iteration | solve | step norm | hidden / head+log-std | cosine to reference "
        "| damping share of max_kl | predicted improvement |\n|---|---|---|---|---|---|---|"
    )
    original_closure, original_step = rl.trpo.make_policy_closure, agent.policy_optimizer.step
    batches = []

    def keep_batch(policy, batch, params=None):
        batches.append(batch)
        return original_closure(policy, batch, params)

    def step(closure, **kwargs):  # before the iteration's own step: the same weights and batch
        if agent.iteration + 1 in args.at:
            report(agent, batches[-1])
        return original_step(closure, **kwargs)

    rl.trpo.make_policy_closure = keep_batch
    agent.policy_optimizer.step = step  # type: ignore[method-assign]
    agent.learn(progress="none")


if __name__ == "__main__":
    main()
