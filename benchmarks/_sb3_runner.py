"""Run sb3-contrib's TRPO with RL Zoo's MuJoCo settings and report timings as JSON.

Used by benchmarks/perf.py and benchmarks/learning.py in a subprocess of its own (one torch
thread, its own peak RSS). Needs the `bench` extra: pip install -e ".[bench]".
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import warnings

import gymnasium as gym
import numpy as np
import torch


def zoo_settings(env_id: str) -> dict:
    """rl_zoo3 hyperparams/trpo.yml, 'mujoco-defaults' (HalfCheetah: target_kl 0.04)."""
    settings = dict(
        n_steps=1024, batch_size=128, gamma=0.99, gae_lambda=0.95, sub_sampling_factor=1,
        cg_max_steps=25, cg_damping=0.1, n_critic_updates=20, learning_rate=1e-3,
    )  # fmt: skip
    if env_id.startswith("HalfCheetah"):
        settings["target_kl"] = 0.04
    if env_id.startswith("Swimmer"):
        settings["gamma"] = 0.9999
    return settings


def time_train(model) -> list[float]:
    """Wrap ``model.train`` so that each call's seconds are appended to the returned list."""
    times: list[float] = []
    train = model.train

    def timed_train() -> None:
        start = time.perf_counter()
        train()
        times.append(time.perf_counter() - start)

    model.train = timed_train
    return times


def evaluate(model, env_id: str, venv, episodes: int, seed: int) -> tuple[float, float]:
    """Deterministic episodes on a fresh env with VecNormalize statistics frozen."""
    env = gym.make(env_id)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed * 100 + episode)
        done, total = False, 0.0
        while not done:
            norm_obs = venv.normalize_obs(obs[None])
            action, _ = model.predict(norm_obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action[0])
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns)), float(np.std(returns))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--steps", type=int, default=61_440)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-envs", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=0)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--out", default=None, help="JSON lines file for evaluations")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)

    from sb3_contrib import TRPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    venv = VecNormalize(make_vec_env(args.env, n_envs=args.num_envs, seed=args.seed))
    model = TRPO("MlpPolicy", venv, seed=args.seed, device="cpu", verbose=0,
                 **zoo_settings(args.env))  # fmt: skip
    train_times = time_train(model)
    evals: list[dict] = []
    eval_time = [0.0]
    start = time.perf_counter()

    class EvalCallback(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_eval = args.eval_every

        def _on_step(self) -> bool:
            if args.eval_every and self.num_timesteps >= self.next_eval:
                self.next_eval += args.eval_every
                t0 = time.perf_counter()
                mean, std = evaluate(model, args.env, venv, args.eval_episodes, args.seed)
                eval_time[0] += time.perf_counter() - t0
                evals.append(
                    dict(
                        step=self.num_timesteps,
                        mean_return=mean,
                        std_return=std,
                        time=time.perf_counter() - start - eval_time[0],
                    )
                )
            return True

    model.learn(total_timesteps=args.steps, callback=EvalCallback())
    wall = time.perf_counter() - start - eval_time[0]
    final_mean, final_std = evaluate(model, args.env, venv, args.eval_episodes, args.seed)
    evals.append(dict(step=args.steps, mean_return=final_mean, std_return=final_std, time=wall))
    if args.out:
        with open(args.out, "w") as f:
            for row in evals:
                f.write(json.dumps(row) + "\n")
    train_total = sum(train_times)
    print(json.dumps(dict(
        library="sb3-contrib", env=args.env, steps=args.steps, seed=args.seed, wall_s=wall,
        steps_per_s=args.steps / wall, update_s_per_iter=train_total / max(len(train_times), 1),
        rollout_steps_per_s=args.steps / max(wall - train_total, 1e-9),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        final_return=final_mean,
    )))  # fmt: skip


if __name__ == "__main__":
    main()
