"""Side by side on ALE/Pong-v5: our TRPO against sb3-contrib's (CnnPolicy), the same settings.

Settings: our ALE preset (OpenAI Baselines' Atari TRPO: 16 envs x 512 steps, max_kl 0.001,
10 CG steps, damping 0.001, gamma 0.98, lambda 1.0, Fisher products on a fifth of the batch,
value: 3 epochs of Adam at 1e-4 in minibatches of 64, advantages standardised) mapped to
sb3-contrib's names (n_steps, target_kl, cg_max_steps, cg_damping, gae_lambda,
sub_sampling_factor 5, n_critic_updates, batch_size). Both see the same envs: gymnasium's
AtariPreprocessing (frame skip 4, 84x84 grey, no-op starts) and FrameStackObservation(4) as
``rl.atari`` builds them, stepped by a sync vector env (sb3: DummyVecEnv); both use the Nature
CNN, the policy and the value each with its own (sb3: ``share_features_extractor=False``).
Each side runs in a subprocess of its own (its own peak RSS), one after the other.

    python benchmarks/atari.py                    # 16,384 steps each (2 iterations)
    python benchmarks/atari.py --steps 8192 --threads 2 --out atari.json
    python benchmarks/atari.py --smoke            # 2 envs x 64 steps: the harness runs

Needs the bench and atari extras: pip install -e ".[bench,atari]".
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

ENV_ID = "ALE/Pong-v5"


def run_ours(args: argparse.Namespace) -> dict:
    import rl
    from rl.progress import Progress

    rows: list[dict] = []

    class Rows(Progress):
        def iteration(self, row: dict) -> None:
            rows.append(row)

    config = rl.TRPOConfig.from_preset(
        ENV_ID, total_steps=args.steps, seed=args.seed, num_envs=args.num_envs,
        steps_per_iteration=args.num_envs * args.steps_per_env, eval_every=0,
        torch_threads=args.threads,
    )  # fmt: skip
    agent = rl.TRPO(config)
    start = time.perf_counter()
    agent.learn(progress=Rows(args.steps))
    wall = time.perf_counter() - start
    agent.close()
    return {
        "wall_s": wall,
        "update_s_per_iter": sum(r["update_time"] for r in rows) / len(rows),
        "rollout_s_per_iter": sum(r["rollout_time"] for r in rows) / len(rows),
    }


def run_sb3(args: argparse.Namespace) -> dict:
    import torch
    from _sb3_runner import time_train
    from sb3_contrib import TRPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from rl.atari import AtariConfig, ensure_registered, make_atari_env

    torch.set_num_threads(args.threads)
    ensure_registered(ENV_ID)
    venv = DummyVecEnv([lambda: make_atari_env(ENV_ID, None, AtariConfig())] * args.num_envs)
    model = TRPO(
        "CnnPolicy", venv, n_steps=args.steps_per_env, batch_size=64, gamma=0.98,
        gae_lambda=1.0, n_critic_updates=3, learning_rate=1e-4, target_kl=0.001,
        cg_max_steps=10, cg_damping=0.001, sub_sampling_factor=5, normalize_advantage=True,
        policy_kwargs={"share_features_extractor": False}, seed=args.seed, device="cpu",
    )  # fmt: skip
    train_times = time_train(model)
    start = time.perf_counter()
    model.learn(total_timesteps=args.steps)
    wall = time.perf_counter() - start
    update = sum(train_times) / max(len(train_times), 1)
    return {
        "wall_s": wall,
        "update_s_per_iter": update,
        "rollout_s_per_iter": (wall - sum(train_times)) / max(len(train_times), 1),
    }


def side(args: argparse.Namespace) -> None:
    """One library's run, in this process: its result as one JSON line."""
    warnings.filterwarnings("ignore")
    result = (run_ours if args.side == "ours" else run_sb3)(args)
    result |= {
        "library": args.side,
        "steps": args.steps,
        "steps_per_s": args.steps / result["wall_s"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=16_384)
    parser.add_argument("--num-envs", type=int, default=16)
    parser.add_argument("--steps-per-env", type=int, default=512)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="2 envs x 64 steps, 256 steps")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--side", choices=("ours", "sb3"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.num_envs, args.steps_per_env = 256, 2, 64
    if args.side:
        side(args)
        return
    results = {}
    for library in ("ours", "sb3"):
        command = [
            sys.executable, __file__, "--side", library, "--steps", str(args.steps),
            "--num-envs", str(args.num_envs), "--steps-per-env", str(args.steps_per_env),
            "--threads", str(args.threads), "--seed", str(args.seed),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{library} failed:\n{done.stderr[-3000:]}")
        results[library] = json.loads(done.stdout.strip().splitlines()[-1])
        print(library, json.dumps(results[library]), flush=True)
    ratio = results["sb3"]["wall_s"] / results["ours"]["wall_s"]
    update = results["sb3"]["update_s_per_iter"] / results["ours"]["update_s_per_iter"]
    print(f"end to end: ours {ratio:.2f}x sb3-contrib's speed; update {update:.2f}x faster")
    if args.out:
        Path(args.out).write_text(json.dumps(results | {"speed_ratio": ratio}, indent=1))


if __name__ == "__main__":
    main()
