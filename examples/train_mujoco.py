"""Train TRPO on a MuJoCo task (HalfCheetah-v5 by default) with RL Zoo's tuned settings.

    python examples/train_mujoco.py [--env-id Hopper-v5] [--total-steps 1000000] [--seed 0]

The preset normalizes observations and rewards (gymnasium's wrappers; the observation
statistics are saved with the model and frozen for evaluation), uses 2 envs x 1,024 steps
per iteration, 25 CG iterations, and max_kl 0.04 on HalfCheetah. The run directory gets
config.yaml, metrics.jsonl, evals.jsonl and model.pt; evaluate it again later with
`trpo eval RUN_DIR`.
"""

from __future__ import annotations

import argparse

import rl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="HalfCheetah-v5")
    parser.add_argument("--total-steps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", default=None, help="default: runs/ENV-seedS")
    args = parser.parse_args()

    run_dir = args.run_dir or f"runs/{args.env_id}-seed{args.seed}"
    config = rl.TRPOConfig.from_preset(
        args.env_id,
        total_steps=args.total_steps,
        seed=args.seed,
        eval_every=50_000,
        run_dir=run_dir,
    )
    agent = rl.TRPO(config).learn(final_evaluation=True)
    print(f"final deterministic evaluation: {agent.last_evaluation}")
    print(f"saved to {run_dir}/model.pt")
    agent.close()


if __name__ == "__main__":
    main()
