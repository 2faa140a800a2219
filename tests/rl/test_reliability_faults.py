"""Faults from outside the algorithm: NaN and infinite env outputs, a policy update that
would leave non-finite parameters, AsyncVectorEnv workers that raise or die, and the
determinism that exact resume relies on."""

from __future__ import annotations

import functools
import json
import multiprocessing

import gymnasium as gym
import numpy as np
import pytest
import torch
from fault_envs import FailingOnceEnv, NonFiniteEnv

import rl
import rl.loop
from rl.checkpoint import read_checkpoint
from rl.cli import main
from rl.errors import EnvWorkerError, NonFiniteEnvError
from tests.conftest import TIMING_KEYS, rows


def parameters(agent):
    return [p.detach().clone() for p in [*agent.policy.parameters(), *agent.value.parameters()]]


def pendulum_config(run_dir, **overrides):
    settings = dict(
        env_id="Pendulum-v1",
        total_steps=256,
        steps_per_iteration=64,  # 32 vector steps of 2 envs
        seed=0,
        checkpoint_every=1,
        normalize_observations=True,
        policy={"hidden_sizes": (8,)},
        value={"hidden_sizes": (8,), "epochs": 1},
        run_dir=str(run_dir),
    )
    return rl.TRPOConfig(**{**settings, **overrides})


# ------------------------------------------------------------------- NaN and inf from envs
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@pytest.mark.parametrize(
    ("quantity", "value", "shown"),
    [
        ("observation", np.nan, "nan"),
        ("observation", -np.inf, "-inf"),
        ("observation", 1e300, "inf"),  # finite in float64, infinite in the float32 buffer
        ("reward", np.inf, "inf"),
        ("reward", np.nan, "nan"),
    ],
)
def test_non_finite_env_output_stops_training_naming_env_and_step(tmp_path, quantity, value, shown):
    """Sub-env 1 returns the bad value at its 40th step: iteration 2 (steps 65..128), vector
    step 8, run step 64 + 8 * 2 = 80. Nothing of iteration 2 is learned or saved."""
    env_fn = functools.partial(NonFiniteEnv, quantity=quantity, value=value, at_step=40)
    after_first = {}

    def keep_parameters(agent, row):
        after_first.setdefault("parameters", parameters(agent))

    agent = rl.TRPO(pendulum_config(tmp_path), env_fn=env_fn)
    with pytest.raises(NonFiniteEnvError) as error:
        agent.learn(progress="none", callback=keep_parameters)
    message = str(error.value)
    assert "env 'Pendulum-v1' (sub-env 1)" in message
    assert f"non-finite {quantity} ({shown})" in message
    assert "at step 80 (iteration 2, at vector step 8 of its rollout)" in message
    assert (error.value.env_index, error.value.vector_step) == (1, 7)
    for now, before in zip(parameters(agent), after_first["parameters"], strict=True):
        assert torch.isfinite(now).all()
        torch.testing.assert_close(now, before, rtol=0, atol=0)
    assert read_checkpoint(tmp_path / "checkpoint.pt")["progress"]["iteration"] == 1
    assert len(rows(tmp_path)) == 1 and not (tmp_path / "model.pt").exists()


def test_nan_in_a_categorical_policy_s_input_is_named_not_a_sampling_error():
    """Without the check, NaN logits would fail in torch.multinomial with no env named."""
    env_fn = functools.partial(NonFiniteEnv, env_id="CartPole-v1", at_step=3, env_index=0)
    config = rl.TRPOConfig(env_id="CartPole-v1", total_steps=64, steps_per_iteration=64)
    with pytest.raises(NonFiniteEnvError, match=r"\(sub-env 0\) returned a non-finite obs"):
        rl.TRPO(config, env_fn=env_fn).learn(progress="none")


def test_non_finite_reset_observation_is_refused():
    env_fn = functools.partial(NonFiniteEnv, quantity="reset", value=np.inf)
    config = rl.TRPOConfig(env_id="Pendulum-v1", total_steps=64, steps_per_iteration=64)
    with pytest.raises(NonFiniteEnvError, match=r"sub-env 1 returned a non-finite .* on reset"):
        rl.TRPO(config, env_fn=env_fn).learn(progress="none")


@pytest.fixture
def nan_env_id():
    env_id = "rl-tests/NaNPendulum-v0"
    gym.register(env_id, entry_point=NonFiniteEnv)
    yield env_id
    gym.registry.pop(env_id)


def test_trpo_train_prints_the_non_finite_env_error_as_one_line(tmp_path, nan_env_id, capsys):
    run_dir = tmp_path / "run"
    args = ["train", nan_env_id, "--run-dir", str(run_dir), "--seed", "0", "--num-envs", "2",
            "--total-steps", "256", "--set", "steps_per_iteration=64",
            "--set", "checkpoint_every=1", "--quiet"]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"trpo train: error: env '{nan_env_id}' (sub-env 1) returned a non-")
    assert "its last checkpoint is intact: once the cause is fixed, continue with: " in err
    assert f"trpo train --resume {run_dir}" in err


# ------------------------------------------------------------------- non-finite updates
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_update_that_would_make_parameters_non_finite_is_rejected_and_restores_them():
    """Rewards of 3e38 are finite in float32, but their returns overflow: the policy step
    sees a non-finite loss and is rejected, the value fit diverges and is undone. Both
    networks keep their parameters bit for bit, and the next finite rollout learns."""
    config = rl.TRPOConfig(
        env_id="Pendulum-v1", total_steps=128, steps_per_iteration=64, seed=0,
        policy={"hidden_sizes": (8,)}, value={"hidden_sizes": (8,), "epochs": 2},
    )  # fmt: skip
    agent = rl.TRPO(config)
    envs = agent._make_envs(config.num_envs, training=True)
    collector = rl.rollout.RolloutCollector(envs, agent.policy, config.steps_per_env)
    collector.reset(seed=0)
    rollout = collector.collect()
    honest_rewards = rollout.rewards.clone()
    rollout.rewards.fill_(3e38)
    before = parameters(agent)
    value_state = json.dumps(
        {k: v.tolist() for k, v in agent.value_optimizer.state_dict()["state"].get(0, {}).items()}
    )
    metrics = update(agent, rollout)
    assert metrics["accepted"] is False and metrics["reason"].startswith("non-finite")
    assert np.isnan(metrics["value_loss"])
    for now, then in zip(parameters(agent), before, strict=True):
        assert torch.isfinite(now).all()
        torch.testing.assert_close(now, then, rtol=0, atol=0)
    state_now = agent.value_optimizer.state_dict()["state"].get(0, {})
    assert json.dumps({k: v.tolist() for k, v in state_now.items()}) == value_state
    rollout.rewards.copy_(honest_rewards)
    metrics = update(agent, rollout)
    assert np.isfinite(metrics["value_loss"]) and metrics["reason"] != "non-finite loss"
    envs.close()


def update(agent: rl.TRPO, rollout) -> dict:
    """One update (rl.loop.update), its value fit run here and done."""
    row, fit, _ = rl.loop.update(agent, rollout, None)
    return {**row, "value_loss": fit.result()}


# ------------------------------------------------------------------- async env workers
@pytest.fixture(scope="module")
def uninterrupted_cartpole(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    marker = run_dir / "never-fail"
    marker.touch()
    env_fn = functools.partial(FailingOnceEnv, str(marker))
    rl.TRPO(cartpole_config(run_dir), env_fn=env_fn).learn(progress="none")
    return run_dir


def cartpole_config(run_dir, **overrides):
    settings = dict(
        env_id="CartPole-v1",
        total_steps=1024,
        steps_per_iteration=128,  # 64 vector steps of 2 envs
        seed=0,
        checkpoint_every=1,
        policy={"hidden_sizes": (8,)},
        value={"hidden_sizes": (8,), "epochs": 1},
        run_dir=str(run_dir),
    )
    return rl.TRPOConfig(**{**settings, **overrides})


@pytest.mark.filterwarnings("ignore::UserWarning:gymnasium.vector.async_vector_env")
@pytest.mark.parametrize(
    ("how", "expected"), [("raise", "env worker 1 raised (RuntimeError: simulated failure inside"),
                          ("exit", "env worker 1 died (exit code 3)")]
)  # fmt: skip
def test_async_worker_that_raises_or_dies_keeps_the_checkpoint_and_resume_works(
    tmp_path, uninterrupted_cartpole, how, expected
):
    """Sub-env 1 fails at its 150th step, in iteration 3 (after the checkpoint of
    iteration 2); resume replays it (it does not fail twice) and ends as if nothing had
    happened."""
    run_dir = tmp_path / "run"
    env_fn = functools.partial(FailingOnceEnv, str(tmp_path / "failed"), how, 150)
    agent = rl.TRPO(cartpole_config(run_dir, vector_mode="async"), env_fn=env_fn)
    with pytest.raises(EnvWorkerError) as error:
        agent.learn(progress="none")
    assert f"env 'CartPole-v1': {expected}" in str(error.value)
    assert "in iteration 3, after step 256" in str(error.value)
    # the other worker was stopped, not left (the value-fit process is kept on purpose)
    assert [p.name for p in multiprocessing.active_children()] in ([], ["rl-value-fit"])
    assert read_checkpoint(run_dir / "checkpoint.pt")["progress"]["iteration"] == 2
    assert read_checkpoint(run_dir / "checkpoint.prev.pt")["progress"]["iteration"] == 1
    resumed = rl.TRPO.resume(run_dir, env_fn=env_fn)
    assert resumed.iteration == 2
    resumed.learn(progress="none")
    assert rows(run_dir) == rows(uninterrupted_cartpole)


# ------------------------------------------------------------------- determinism
def test_same_seed_writes_identical_metrics_files(tmp_path):
    """Two runs with one seed on CPU: metrics.jsonl and evals.jsonl equal but for the
    timing fields, which are the only ones allowed to differ."""
    for name in ("first", "second"):
        config = pendulum_config(
            tmp_path / name, total_steps=512, normalize_rewards=True, eval_every=256,
            eval_episodes=2,
        )  # fmt: skip
        rl.TRPO(config).learn(progress="none").close()
    first, second = rows(tmp_path / "first"), rows(tmp_path / "second")
    assert len(first) == 8 and first == second
    assert rows(tmp_path / "first", "evals.jsonl") == rows(tmp_path / "second", "evals.jsonl")
    raw = json.loads((tmp_path / "first" / "metrics.jsonl").read_text().splitlines()[0])
    assert raw.keys() >= TIMING_KEYS
