"""What the NaN/inf checks of the training envs cost per vector step.

Two checks run on every vector step: ``rl.envs.RefuseNonFinite`` on the arrays the vector
env returns (below the normalizers) and ``rl.rollout.FiniteCheck`` on the float32 rollout
buffers. Times ``RolloutCollector.collect()`` on HalfCheetah-v5 with its preset's env
settings (2 envs, observation and reward normalization), with both checks and with both
replaced by no-ops, interleaved, and each check alone with ``timeit``. Prints µs per vector
step and the share of a step.

    python benchmarks/finite_check_cost.py [--env HalfCheetah-v5] [--rounds 21]
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit

import numpy as np
import torch

import rl
from rl.config import PolicyConfig
from rl.envs import make_env_factory, make_vector_envs
from rl.policies import make_policy
from rl.rollout import RolloutCollector
from rl.wrappers import RefuseNonFinite


def build_collector(env_id: str, steps_per_env: int) -> tuple[RolloutCollector, object]:
    config = rl.TRPOConfig.from_preset(env_id, source="zoo")
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
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--steps-per-env", type=int, default=512)
    args = parser.parse_args()
    torch.set_num_threads(1)
    collector, envs = build_collector(args.env, args.steps_per_env)
    buffer_check = collector._check_finite
    refuse = next(
        wrapper for wrapper in _wrappers(envs.env) if isinstance(wrapper, RefuseNonFinite)
    )
    time_collect(collector, args.steps_per_env)  # warm up
    with_checks, without_checks = [], []
    for _ in range(args.rounds):
        with_checks.append(time_collect(collector, args.steps_per_env))
        collector._check_finite = lambda t: None
        refuse._check = lambda *args, **kwargs: None
        without_checks.append(time_collect(collector, args.steps_per_env))
        collector._check_finite = buffer_check
        del refuse._check
    calls = 200_000
    observations, rewards = np.zeros((2, 17)), np.zeros(2)
    wrapper_alone = (
        timeit.timeit(
            lambda: (refuse._check("observation", observations), refuse._check("reward", rewards)),
            number=calls,
        )
        / calls
    )
    buffer_alone = timeit.timeit(lambda: buffer_check(3), number=calls) / calls
    step = statistics.median(without_checks)
    difference = statistics.median(with_checks) - step
    fastest = min(without_checks)
    fastest_difference = min(with_checks) - fastest
    alone = wrapper_alone + buffer_alone
    print(f"{args.env}, {envs.num_envs} envs, torch threads 1, {args.rounds} rounds")
    print(f"vector step without the checks:  {step * 1e6:8.1f} µs (median)")
    print(f"with minus without:              {difference * 1e6:8.1f} µs ({difference / step:+.2%})")
    print(
        f"the same, fastest rounds:        {fastest_difference * 1e6:8.1f} µs "
        f"({fastest_difference / fastest:+.2%}; both noisy on a loaded machine)"
    )
    print(f"RefuseNonFinite alone (timeit):  {wrapper_alone * 1e6:8.2f} µs")
    print(f"FiniteCheck alone (timeit):      {buffer_alone * 1e6:8.2f} µs")
    print(f"both:                            {alone * 1e6:8.2f} µs ({alone / step:.2%} of a step)")
    envs.close()


def _wrappers(env):  # type: ignore[no-untyped-def]
    while hasattr(env, "env"):
        yield env
        env = env.env


if __name__ == "__main__":
    main()
