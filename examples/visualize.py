"""Plot a run's learning curve and render its trained policy to a PNG and a GIF, headless.

    python examples/visualize.py RUN_DIR [--out DIR] [--max-frames 300]
    python examples/visualize.py --demo [--out DIR] [--epochs 30]

With RUN_DIR (from ``trpo train``): ``RUN_DIR/returns.png`` style curves (``rl.plot``) and
one deterministic episode of ``RUN_DIR/model.pt`` rendered as ``rgb_array`` frames. With
``--demo``: trains Pendulum-v1 with the seed project's ``TRPOAgent`` call, plots its
per-epoch returns and renders its policy. Nothing needs a display (matplotlib's Agg canvas,
gymnasium's rgb_array render mode; MuJoCo envs need ``MUJOCO_GL=egl`` or ``osmesa``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

import rl
from rl.atari import make_gym_env
from rl.plot import plot_runs
from rl.video import use_offscreen_rendering


def render_episode(
    env: gym.Env, act: Callable[[Any], Any], out_dir: Path, name: str, max_frames: int, seed: int
) -> tuple[float, Path, Path]:
    """Play one episode with ``act``; save its first frame (PNG) and the episode (GIF)."""
    observation, _ = env.reset(seed=seed)
    frames = [env.render()]
    episode_return, done = 0.0, False
    while not done:
        observation, reward, terminated, truncated, _ = env.step(act(observation))
        episode_return += float(reward)
        done = terminated or truncated
        if len(frames) < max_frames:
            frames.append(env.render())
    images = [Image.fromarray(np.asarray(frame)) for frame in frames]
    png, gif = out_dir / f"{name}.png", out_dir / f"{name}.gif"
    images[0].save(png)
    fps = env.metadata.get("render_fps") or 30
    images[0].save(gif, save_all=True, append_images=images[1:], duration=1000 // fps, loop=0)
    return episode_return, png, gif


def visualize_run(run_dir: Path, out_dir: Path, max_frames: int) -> None:
    try:
        print(f"learning curve: {plot_runs([run_dir], out_dir / 'returns.png')}")
    except ValueError as error:  # too short a run: no finished episode yet
        print(f"no learning curve: {error}")
    agent = rl.TRPO.load(run_dir / "model.pt")
    config = agent.config
    env = make_gym_env(
        config.env_id, {**config.env_kwargs, "render_mode": "rgb_array"}, config.atari
    )
    name = config.env_id.replace("/", "_")
    episode_return, png, gif = render_episode(
        env, agent.predict, out_dir, name, max_frames, seed=config.seed + 123
    )
    env.close()
    agent.close()
    print(f"one deterministic episode: return {episode_return:.1f}; frames: {png}, {gif}")


def demo(out_dir: Path, epochs: int, max_frames: int) -> None:
    env = gym.make("Pendulum-v1", render_mode="rgb_array")
    agent = rl.TRPOAgent(env.observation_space.shape[0], env.action_space.shape[0], hidden_dim=64,
                         max_kl=0.01, gamma=0.99, lam=0.95, cg_iters=10, backtrack_iters=10,
                         damping=0.1)  # fmt: skip
    history = agent.train(env, num_epochs=epochs, steps_per_epoch=2000, progress="plain")
    figure = Figure(figsize=(6, 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    points = [(row["step"], row["episode_return_mean"]) for row in history]
    axes.plot(*zip(*[p for p in points if p[1] is not None], strict=True))
    axes.set(xlabel="env steps", ylabel="mean episode return", title="TRPOAgent on Pendulum-v1")
    figure.savefig(out_dir / "returns.png", dpi=100)
    print(f"learning curve: {out_dir / 'returns.png'}")
    episode_return, png, gif = render_episode(env, agent.act, out_dir, "Pendulum-v1", max_frames, 7)
    env.close()
    print(f"one deterministic episode: return {episode_return:.1f}; frames: {png}, {gif}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="a run directory of trpo train")
    parser.add_argument("--demo", action="store_true", help="train Pendulum with TRPOAgent first")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN_DIR or ./visualize)")
    parser.add_argument("--epochs", type=int, default=30, help="--demo epochs of 2,000 steps")
    parser.add_argument("--max-frames", type=int, default=300, help="frames kept in the GIF")
    args = parser.parse_args()
    if (args.run_dir is None) == (not args.demo):
        parser.error("give either RUN_DIR or --demo")
    for variable in ("SDL_VIDEODRIVER", "SDL_AUDIODRIVER"):  # pygame (classic control, Box2D)
        os.environ.setdefault(variable, "dummy")  # renders off-screen without a display
    use_offscreen_rendering()  # MuJoCo: EGL or OSMesa when there is no display
    out_dir = args.out or (args.run_dir if args.run_dir is not None else Path("visualize"))
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.demo:
        demo(out_dir, args.epochs, args.max_frames)
    else:
        visualize_run(args.run_dir, out_dir, args.max_frames)


if __name__ == "__main__":
    main()
