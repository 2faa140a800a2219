"""Train TRPO on Pendulum-v1 and evaluate it: the public API in a few lines.

    python examples/train_pendulum.py [--total-steps 100000] [--seed 0]

Uses the Pendulum preset (RL Baselines3 Zoo's TRPO settings: gamma 0.9, 2 envs x 1,024
steps per iteration); about 20 s on one CPU core, deterministic eval return near -150 to -200.
"""

from __future__ import annotations

import argparse

import gymnasium as gym

import rl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-steps", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config = rl.TRPOConfig.from_preset(
        "Pendulum-v1", total_steps=args.total_steps, seed=args.seed, eval_every=20_480
    )
    agent = rl.TRPO(config).learn()

    stats = agent.evaluate(episodes=10)
    print(f"deterministic return: {stats['mean_return']:.1f} ± {stats['std_return']:.1f}")

    env = gym.make("Pendulum-v1")  # one more episode, by hand, with predict()
    observation, _ = env.reset(seed=123)
    episode_return, done = 0.0, False
    while not done:
        observation, reward, terminated, truncated, _ = env.step(agent.predict(observation))
        episode_return += float(reward)
        done = terminated or truncated
    print(f"one episode with predict(): {episode_return:.1f}")
    agent.close()


if __name__ == "__main__":
    main()
