"""The training loop: determinism, evaluations kept apart from learning, callbacks, masking."""

from __future__ import annotations

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
