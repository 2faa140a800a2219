"""Rollout speed against raw env stepping, by number of envs, sync and async vectors.

For each ``num_envs`` in 1, 2, 4, 8, 16 and each vector mode: the raw limit (random
actions through gymnasium's Sync/AsyncVectorEnv, nothing else) and our rollout inside a
real training run (``samples / rollout_time`` from its metrics, the value fit running
beside it as in normal training; the first two iterations dropped as warm-up), as
``issue 18`` asks. Every measurement is a fresh process; run it on an idle machine.

    python benchmarks/rollout_scaling.py [--env HalfCheetah-v5] [--steps 40960] \\
        [--envs 1 2 4 8 16] [--modes sync async] [--out results/rollout_scaling.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

RAW = """
import sys, time, warnings, gymnasium as gym
warnings.filterwarnings("ignore")
env_id, num_envs, mode, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode)
envs.reset(seed=0); envs.action_space.seed(0)
actions = [envs.action_space.sample() for _ in range(256)]
for i in range(64):
    envs.step(actions[i % 256])
start = time.perf_counter()
for i in range(steps // num_envs):
    envs.step(actions[i % 256])
print((steps // num_envs) * num_envs / (time.perf_counter() - start))
envs.close()
"""


def raw_steps_per_s(env_id: str, num_envs: int, mode: str, steps: int) -> float:
    command = [sys.executable, "-c", RAW, env_id, str(num_envs), mode, str(steps)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env=ENV)
    return float(out.stdout.strip().splitlines()[-1])


def rollout_steps_per_s(env_id: str, num_envs: int, mode: str, steps: int) -> float:
    """Median ``samples / rollout_time`` of a training run's iterations, the first dropped
    (``steps_per_iteration`` 2048, the preset otherwise)."""
    with tempfile.TemporaryDirectory() as directory:
        run_dir = Path(directory) / "run"
        command = [
            sys.executable, "-m", "rl.cli", "train", env_id, "--preset", "zoo", "--total-steps",
            str(steps),
            "--num-envs", str(num_envs), "--set", f"vector_mode={mode}",
            "--set", "steps_per_iteration=2048", "--set", "eval_every=0",
            "--run-dir", str(run_dir), "--quiet",
        ]  # fmt: skip
        subprocess.run(command, capture_output=True, text=True, check=True, env=ENV)
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    speeds = [row["samples"] / row["rollout_time"] for row in rows]
    return statistics.median(speeds[1:] or speeds)


ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--steps", type=int, default=40_960)
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--modes", nargs="+", default=["sync", "async"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = []
    print("| envs | mode | raw steps/s | ours steps/s | ours / raw |")
    print("|---|---|---|---|---|")
    for mode in args.modes:
        for num_envs in args.envs:
            raw = raw_steps_per_s(args.env, num_envs, mode, args.steps)
            ours = rollout_steps_per_s(args.env, num_envs, mode, args.steps)
            results.append({"num_envs": num_envs, "mode": mode, "raw": raw, "ours": ours})
            print(f"| {num_envs} | {mode} | {raw:,.0f} | {ours:,.0f} | {ours / raw:.2f}x |",
                  flush=True)  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"env": args.env, "results": results}, indent=1))


if __name__ == "__main__":
    main()
