"""The training loop: determinism, evaluations kept apart from learning, callbacks, masking."""

from __future__ import annotations

import pytest
from toy_envs import CounterEnv

import rl
from tests.conftest import TIMING_KEYS


def run_rows(seed=5, **overrides):
    config = rl.TRPOConfig.from_preset(
        "CartPole-v1", total_steps=2048, steps_per_iteration=512, seed=seed, **overrides
    )
    rows = []
    agent = rl.TRPO(config).learn(
        progress="none", callback=lambda _, row: rows.append(dict(row)) and None
    )
    agent.close()
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def test_same_seed_gives_the_same_run():
    assert run_rows() == run_rows()


def test_evaluations_during_training_do_not_change_what_is_learned():
    plain = run_rows()
    with_evaluations = run_rows(eval_every=512, eval_episodes=3)
    assert plain == with_evaluations
    assert plain != run_rows(seed=6)  # and the comparison can tell runs apart


def test_callback_returning_false_stops_training():
    config = rl.TRPOConfig(env_id="CartPole-v1", total_steps=4096, steps_per_iteration=512)
    agent = rl.TRPO(config).learn(progress="none", callback=lambda agent, row: row["step"] < 1024)
    assert agent.step == 1024 and agent.iteration == 2


def test_reset_slots_are_not_learned_from():
    # CounterEnv's episodes last 3, 5, 2 and 4 steps: 17 slots hold 3 reset slots
    config = rl.TRPOConfig(env_id="counter", total_steps=17, num_envs=1, steps_per_iteration=17)
    rows = []
    rl.TRPO(config, env_fn=CounterEnv).learn(
        progress="none", callback=lambda _, row: rows.append(row) and None
    )
    assert rows[0]["samples"] == 14
    assert rows[0]["episodes"] == 4  # the fourth ends in the last slot
    assert rows[0]["episode_length_mean"] == (3 + 5 + 2 + 4) / 4
    assert rows[0]["episode_return_mean"] == (6 + 15 + 3 + 10) / 4  # rewards 1..L per episode


def test_max_kl_final_moves_the_trust_region_linearly_over_the_run():
    """max_kl 0.04 -> 0.004 over 8 iterations: iteration i steps within 0.04 - 0.0045 i."""

    def trained(**overrides):
        seen = []  # (the optimizer's max_kl in the step just taken, the step's KL)

        def record(agent, row):
            seen.append((agent.policy_optimizer.param_groups[0]["max_kl"], row["kl"]))

        config = rl.TRPOConfig.from_preset(
            "CartPole-v1", total_steps=4096, steps_per_iteration=512, seed=3, max_kl=0.04,
            **overrides,
        )  # fmt: skip
        rl.TRPO(config).learn(progress="none", callback=record).close()
        return seen

    scheduled = trained(max_kl_final=0.004)
    assert [radius for radius, _ in scheduled] == pytest.approx(
        [0.04 - 0.0045 * i for i in range(8)], rel=1e-12
    )
    assert all(kl <= radius * (1 + 1e-6) for radius, kl in scheduled)
    constant = trained()
    assert [radius for radius, _ in constant] == [0.04] * 8
    assert constant[-1][1] > scheduled[-1][0]  # the last step took more than the schedule allows
