"""Where one vector step of the rollout goes: cProfile of ``RolloutCollector.collect()``.

Builds the envs and the collector as ``trpo train`` does (RL Zoo's settings by default, as
benchmarks/perf.py), times a few collects without the profiler, then profiles as many
and splits the profiled time per vector step by part (docs/rollout_scaling.md):

    python benchmarks/rollout_profile.py [--env HalfCheetah-v5] [--num-envs 2] \\
        [--iterations 4] [--preset zoo]

The value fit does not run beside it (it would in training); run it on an idle machine.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable
from typing import Any

import torch

import rl
from rl.networks import fast_forward
from rl.rollout import RolloutCollector


def key(function: Callable[..., Any]) -> tuple[str, int, str]:
    """cProfile's key of a Python function."""
    code = function.__code__
    return code.co_filename, code.co_firstlineno, code.co_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--num-envs", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=4, help="collects timed, then profiled")
    parser.add_argument("--preset", choices=("zoo", "default"), default="zoo")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = rl.TRPOConfig.from_preset(
        args.env, source=args.preset, num_envs=args.num_envs,
        steps_per_iteration=1024 * args.num_envs, value_fit_in_background=False,
    )  # fmt: skip
    agent = rl.TRPO(config)
    envs = agent._make_envs(config.num_envs, training=True)
    collector = RolloutCollector(envs, agent.policy, config.steps_per_env, agent.action_generator)
    collector.reset(seed=0)
    collector.collect()  # warm-up
    vector_steps = args.iterations * config.steps_per_env
    start = time.perf_counter()
    for _ in range(args.iterations):
        collector.collect()
    plain = (time.perf_counter() - start) / vector_steps * 1e6

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.iterations):
        collector.collect()
    profiler.disable()
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]

    def cumulative(function: Callable[..., Any]) -> float:
        return stats.get(key(function), (0, 0, 0.0, 0.0))[3] / vector_steps * 1e6

    vector_env = envs.env.unwrapped  # LeanSyncVectorEnv (sync vectors only)
    sub_env = vector_env.envs[0]
    distribution = agent.policy.distribution
    total = cumulative(RolloutCollector.collect)
    stack = cumulative(type(envs.env).step)
    vector = cumulative(type(vector_env).step)
    subs = cumulative(type(sub_env).step)  # totals over every call: all sub-envs of a step
    forward = cumulative(fast_forward(agent.policy.network))
    sampling = cumulative(distribution.sampler(agent.action_generator))
    to_env = cumulative(type(distribution).to_env)
    parts = {
        "collect() in all": total,
        "the env stack (statistics wrappers, vector env, sub-envs)": stack,
        "- the sub-envs' steps (gymnasium's env and wrappers, the episode recorder)": subs,
        "- of which the unwrapped envs' steps (physics, observation, reward)": cumulative(
            type(sub_env.unwrapped).step
        ),
        "- the vector env beyond its sub-envs (stacking, flags)": vector - subs,
        "- the statistics wrappers (non-finite screen, episodes, normalization)": stack - vector,
        "policy forward": forward,
        "sampling": sampling,
        "to_env (clipping)": to_env,
        "the collector's loop and buffer writes": total - stack - forward - sampling - to_env,
    }
    print(f"{args.env}, {args.num_envs} sync envs, {vector_steps} vector steps per measurement, "
          f"torch {torch.__version__}")  # fmt: skip
    print(f"without the profiler: {plain:.0f} µs per vector step "
          f"({args.num_envs * 1e6 / plain:,.0f} env steps/s)\n")  # fmt: skip
    print("| part | µs per vector step (profiled) |\n|---|---|")
    for name, value in parts.items():
        print(f"| {name} | {value:.0f} |")
    envs.close()


if __name__ == "__main__":
    main()
