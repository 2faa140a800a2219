"""Run our TRPO with the same settings as benchmarks/_sb3_runner.py and report JSON.

Used by benchmarks/perf.py and benchmarks/learning.py in a subprocess of its own.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import rl
from rl.progress import Progress


class RowRecorder(Progress):
    """Keeps every metrics row; shows nothing."""

    def __init__(self, total_steps: int) -> None:
        super().__init__(total_steps)
        self.rows: list[dict] = []

    def iteration(self, row: dict) -> None:
        self.rows.append(row)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--steps", type=int, default=61_440)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-envs", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--set", nargs="*", default=[], help="extra config overrides key=value")
    parser.add_argument("--preset", choices=("zoo", "default"), default="zoo",
                        help="zoo: RL Zoo's settings, as sb3; default: ours")  # fmt: skip
    args = parser.parse_args()

    # RL Zoo's MuJoCo settings, as the preset maps them (the same as _sb3_runner.py); or our
    # default preset (a tuned one where a study did better) as it comes
    batch = {"steps_per_iteration": 1024 * args.num_envs} if args.preset == "zoo" else {}
    config = rl.TRPOConfig.from_preset(
        args.env, source=args.preset, total_steps=args.steps, seed=args.seed,
        num_envs=args.num_envs, eval_every=args.eval_every, eval_episodes=args.eval_episodes,
        run_dir=args.run_dir, torch_threads=1, **batch,
    ).with_overrides(args.set)  # fmt: skip
    agent = rl.TRPO(config)
    recorder = RowRecorder(args.steps)  # not a callback: one would keep the value fit from
    start = time.perf_counter()  # running beside the next rollout (see TRPO.learn)
    agent.learn(progress=recorder, final_evaluation=False)
    rows = recorder.rows
    elapsed = time.perf_counter() - start
    steps = rows[-1]["step"]
    training_seconds = steps / rows[-1]["fps"]  # evaluations are kept out of fps
    final = agent.evaluate(episodes=args.eval_episodes)
    update = [row["update_time"] for row in rows]
    rollout_seconds = sum(row["rollout_time"] for row in rows)
    # Self only, as for sb3: the one child either library has is glfw's import-time version
    # probe (a short-lived interpreter started by gymnasium's MuJoCo renderer import).
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(
        library="trust-region", env=args.env, steps=steps, seed=args.seed,
        wall_s=training_seconds, total_s=elapsed, steps_per_s=steps / training_seconds,
        update_s_per_iter=sum(update) / len(update),
        rollout_steps_per_s=steps / rollout_seconds,
        peak_rss_mb=usage / 1024,
        final_return=final["mean_return"],
    )))  # fmt: skip


if __name__ == "__main__":
    main()
