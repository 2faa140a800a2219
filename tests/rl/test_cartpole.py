"""CartPole-v1 reaches a mean return ≥ 475 within 100k steps at a fixed seed."""

from __future__ import annotations

import rl


def test_cartpole_reaches_475_within_100k_steps():
    config = rl.TRPOConfig.from_preset(
        "CartPole-v1", total_steps=100_000, seed=0, eval_every=10_240, eval_episodes=10
    )
    evaluations = []

    def stop_when_solved(agent, row):
        if agent.last_evaluation is not None and agent.last_evaluation["step"] == row["step"]:
            evaluations.append(agent.last_evaluation)
            return agent.last_evaluation["mean_return"] < 475

    agent = rl.TRPO(config).learn(progress="none", callback=stop_when_solved)
    agent.close()
    assert agent.step <= 100_000
    assert evaluations and evaluations[-1]["mean_return"] >= 475, evaluations
