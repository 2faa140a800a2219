"""Side-by-side speed and memory: our TRPO against sb3-contrib's, same task and settings.

Settings (RL Zoo's MuJoCo TRPO settings, both libraries): 2 envs x 1,024 steps per
iteration, value minibatch 128, 25 CG steps, damping 0.1, 20 critic epochs, lr 1e-3,
target/max KL as RL Zoo (0.04 on HalfCheetah), obs + reward normalization, gamma 0.99,
lambda 0.95, one torch thread each. Each measurement runs in its own subprocess, one after
the other, so peak RSS is per run and nothing overlaps.

    python benchmarks/perf.py            # HalfCheetah-v5, 61,440 steps per library
    python benchmarks/perf.py --quick    # about a minute

Needs the bench extra: pip install -e ".[bench]".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def raw_env_steps_per_s(env_id: str, num_envs: int, steps: int) -> float:
    """Random actions through a gymnasium SyncVectorEnv: the physical limit."""
    code = f"""
import time, warnings, gymnasium as gym, numpy as np
warnings.filterwarnings("ignore")
envs = gym.make_vec({env_id!r}, num_envs={num_envs}, vectorization_mode="sync")
envs.reset(seed=0); envs.action_space.seed(0)
actions = [envs.action_space.sample() for _ in range(256)]
start = time.perf_counter()
for i in range({steps} // {num_envs}):
    envs.step(actions[i % 256])
print(({steps} // {num_envs}) * {num_envs} / (time.perf_counter() - start))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run_json(command: list[str]) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--steps", type=int, default=61_440)
    parser.add_argument("--quick", action="store_true", help="20,480 steps per library")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    steps = 20_480 if args.quick else args.steps
    common = ["--env", args.env, "--steps", str(steps), "--eval-episodes", "1"]

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}; {args.env}, {steps} steps per run")  # fmt: skip
    results: dict[str, dict] = {}
    started = time.perf_counter()
    results["raw"] = {"steps_per_s": raw_env_steps_per_s(args.env, 2, min(steps, 20_000))}
    results["sb3"] = run_json([sys.executable, str(HERE / "_sb3_runner.py"), *common])
    results["ours"] = run_json([sys.executable, str(HERE / "_ours_runner.py"), *common])
    if shutil.which("taskset"):
        results["ours_one_core"] = run_json(
            ["taskset", "-c", "0", sys.executable, str(HERE / "_ours_runner.py"), *common]
        )
    print(f"(measured in {time.perf_counter() - started:.0f} s)\n")
    print(table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


def table(results: dict[str, dict]) -> str:
    sb3, ours, raw = results["sb3"], results["ours"], results["raw"]["steps_per_s"]
    one = results.get("ours_one_core")
    rows = [
        "| measure | sb3-contrib | ours | ratio (ours / sb3) | target |",
        "|---|---|---|---|---|",
        f"| end-to-end env steps/s | {sb3['steps_per_s']:,.0f} | {ours['steps_per_s']:,.0f} | "
        f"{ours['steps_per_s'] / sb3['steps_per_s']:.2f}x | >= 4.0x (issue 18) |",
    ]
    if one:
        rows.append(
            f"| end-to-end env steps/s, ours on one core | {sb3['steps_per_s']:,.0f} | "
            f"{one['steps_per_s']:,.0f} | {one['steps_per_s'] / sb3['steps_per_s']:.2f}x | |"
        )
    rows += [
        f"| update time per 2,048-sample iteration (critical path) | "
        f"{sb3['update_s_per_iter'] * 1e3:.0f} ms | {ours['update_s_per_iter'] * 1e3:.0f} ms | "
        f"{ours['update_s_per_iter'] / sb3['update_s_per_iter']:.2f}x | <= 0.25x |",
        f"| rollout steps/s (raw SyncVectorEnv: {raw:,.0f}) | "
        f"{sb3['rollout_steps_per_s']:,.0f} ({sb3['rollout_steps_per_s'] / raw:.2f}x raw) | "
        f"{ours['rollout_steps_per_s']:,.0f} ({ours['rollout_steps_per_s'] / raw:.2f}x raw) | "
        f"{ours['rollout_steps_per_s'] / sb3['rollout_steps_per_s']:.2f}x | ours >= 0.7x raw |",
        f"| peak RSS | {sb3['peak_rss_mb']:.0f} MB | {ours['peak_rss_mb']:.0f} MB | "
        f"{ours['peak_rss_mb'] / sb3['peak_rss_mb']:.2f}x | <= 1.0x |",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
