"""What the rollout's NaN/inf check (``rl.rollout.FiniteCheck``) costs per vector step.

Times ``RolloutCollector.collect()`` on HalfCheetah-v5 with its preset's env settings
(2 envs, observation and reward normalization), with the check and with it replaced by a
no-op, interleaved, and the check alone with ``timeit``. Prints both as µs per vector step
and as a share of the step.

    python benchmarks/finite_check_cost.py [--env HalfCheetah-v5] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit

import torch

import rl
from rl.config import PolicyConfig
from rl.envs import make_env_factory, make_vector_envs
from rl.policies import make_policy
from rl.rollout import RolloutCollector


def build_collector(env_id: str, steps_per_env: int) -> tuple[RolloutCollector, object]:
    config = rl.TRPOConfig.from_preset(env_id)
    envs = make_vector_envs(
        make_env_factory(env_id),
        config.num_envs,
        normalize_observations=config.normalize_observations,
        normalize_rewards=config.normalize_rewards,
    )
    torch.manual_seed(0)
    policy = make_policy(envs.observation_dim, envs.action_space, PolicyConfig())
    collector = RolloutCollector(envs, policy, steps_per_env, torch.Generator().manual_seed(0))
    collector.reset(seed=0)
    return collector, envs


def time_collect(collector: RolloutCollector, steps_per_env: int) -> float:
    """Seconds per vector step of one ``collect()``."""
    start = time.perf_counter()
    collector.collect()
    return (time.perf_counter() - start) / steps_per_env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps-per-env", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(1)
    collector, envs = build_collector(args.env, args.steps_per_env)
    check = collector._check_finite
    time_collect(collector, args.steps_per_env)  # warm up
    with_check, without_check = [], []
    for _ in range(args.rounds):
        collector._check_finite = check
        with_check.append(time_collect(collector, args.steps_per_env))
        collector._check_finite = lambda t: None
        without_check.append(time_collect(collector, args.steps_per_env))
    collector._check_finite = check
    calls = 200_000
    alone = timeit.timeit(lambda: check(3), number=calls) / calls
    step = statistics.median(without_check)
    difference = statistics.median(with_check) - step
    print(f"{args.env}, {envs.num_envs} envs, torch threads 1, {args.rounds} rounds")
    print(f"vector step without the check: {step * 1e6:8.1f} µs (median)")
    print(f"with minus without:            {difference * 1e6:8.1f} µs ({difference / step:+.2%})")
    print(f"the check alone (timeit):      {alone * 1e6:8.2f} µs ({alone / step:.2%} of a step)")
    envs.close()


if __name__ == "__main__":
    main()
