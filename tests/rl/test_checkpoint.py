"""Checkpoint files: what they hold, atomic writes, the fallback to the previous one, refusal
of files that would run code or belong to another run, and `trpo train --resume`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import rl
import rl.checkpoint
import rl.run_files
from rl.checkpoint import CheckpointWarning, latest_checkpoint, read_checkpoint, write_checkpoint
from rl.cli import main
from rl.run_files import CHECKPOINT_FORMAT, CheckpointError
from tests.conftest import rows


def small_config(run_dir, **overrides):
    settings = dict(
        env_id="CartPole-v1",
        total_steps=768,
        steps_per_iteration=256,
        seed=2,
        checkpoint_every=1,
        policy={"hidden_sizes": (8,)},
        value={"hidden_sizes": (8,), "epochs": 1},
        run_dir=str(run_dir),
    )
    return rl.TRPOConfig(**{**settings, **overrides})


@pytest.fixture
def finished_run(tmp_path):
    """Three iterations, a checkpoint after each: checkpoint.pt (3) and checkpoint.prev.pt (2)."""
    rl.TRPO(small_config(tmp_path)).learn(progress="none")
    return tmp_path


def only_plain_data(value):
    if isinstance(value, dict):
        return all(isinstance(k, str | int) and only_plain_data(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(only_plain_data(item) for item in value)
    return value is None or isinstance(value, torch.Tensor | bool | int | float | str)


def test_checkpoint_holds_everything_as_plain_data(finished_run):
    state = read_checkpoint(finished_run / "checkpoint.pt")
    assert state["format"] == CHECKPOINT_FORMAT
    assert state.keys() >= {"config", "model", "policy_optimizer", "value_optimizer", "rng", "envs"}
    assert state["rng"].keys() >= {"torch", "numpy", "python", "generators"}
    assert state["rng"]["generators"].keys() == {"action", "shuffle"}
    assert len(state["envs"]["sub_envs"]) == 2
    assert state["envs"]["sub_envs"][0]["seed"] in (None, 2)  # env i first reset with seed + i
    assert state["progress"]["iteration"] == 3 and state["progress"]["step"] == 768
    assert state["config"]["checkpoint_every"] == 1
    assert only_plain_data(state)
    previous = read_checkpoint(finished_run / "checkpoint.prev.pt")
    assert previous["progress"]["iteration"] == 2
    assert not [p for p in finished_run.iterdir() if p.name.endswith(".tmp")]


def test_checkpoint_every_zero_writes_only_the_final_one(tmp_path):
    rl.TRPO(small_config(tmp_path, checkpoint_every=0)).learn(progress="none")
    assert read_checkpoint(tmp_path / "checkpoint.pt")["progress"]["iteration"] == 3
    assert not (tmp_path / "checkpoint.prev.pt").exists()


def test_checkpoint_built_to_run_code_is_refused(tmp_path):
    created = tmp_path / "created-by-the-checkpoint"

    class CreatesAFile:
        def __reduce__(self):
            return (open, (str(created), "w"))

    path = tmp_path / "checkpoint.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "payload": CreatesAFile()}, path)
    with pytest.raises(CheckpointError, match="never runs code"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="never runs code"):
        latest_checkpoint(tmp_path)
    assert not created.exists()
    torch.load(path, weights_only=False)  # the payload is live: unsafe loading runs it
    assert created.exists()


def test_truncated_checkpoint_gives_a_clear_error_and_the_previous_one_loads(finished_run):
    latest = finished_run / "checkpoint.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(latest)
    with pytest.warns(CheckpointWarning, match="resuming from the previous checkpoint"):
        agent = rl.TRPO.resume(finished_run)
    assert agent.resumed_from == finished_run / "checkpoint.prev.pt"
    assert agent.iteration == 2
    assert [row["iteration"] for row in rows(finished_run)] == [1, 2]
    agent.learn(progress="none")
    assert agent.iteration == 3


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(finished_run):
    (finished_run / "checkpoint.prev.pt").unlink()
    (finished_run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"no checkpoint\.prev\.pt"):
        rl.TRPO.resume(finished_run)


def test_failed_write_keeps_the_checkpoints_there(finished_run, monkeypatch):
    before = (finished_run / "checkpoint.pt").read_bytes()

    def fails_halfway(state, file):
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(rl.run_files.torch, "save", fails_halfway)
    with pytest.raises(OSError, match="disk full"):
        write_checkpoint({"format": CHECKPOINT_FORMAT}, finished_run)
    assert (finished_run / "checkpoint.pt").read_bytes() == before
    assert read_checkpoint(finished_run / "checkpoint.prev.pt")["progress"]["iteration"] == 2
    assert not [p for p in finished_run.iterdir() if p.name.endswith(".tmp")]


def edit_config(run_dir, **changes):
    path = Path(run_dir) / "config.yaml"
    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = value
    path.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"env_id": "Acrobot-v1"}, "env_id = 'CartPole-v1'"),
        ({"policy__hidden_sizes": [32]}, "policy.hidden_sizes = \\[8\\]"),
        ({"num_envs": 4}, "num_envs = 2"),
    ],
)
def test_checkpoint_of_another_env_or_architecture_is_refused(finished_run, change, message):
    edit_config(finished_run, **change)
    with pytest.raises(CheckpointError, match=message):
        rl.TRPO.resume(finished_run)


def test_checkpoint_into_an_agent_of_another_shape_is_refused(finished_run, tmp_path_factory):
    state = read_checkpoint(finished_run / "checkpoint.pt")
    other = rl.TRPO(small_config(tmp_path_factory.mktemp("other"), policy={"hidden_sizes": (4,)}))
    with pytest.raises(CheckpointError, match="networks of the checkpoint do not fit"):
        other.state.load_state_dict(state, other.config.env_id, other.observation_dim)


def test_changed_hyperparameter_resumes_with_a_warning(finished_run):
    edit_config(finished_run, max_kl=0.02)
    with pytest.warns(CheckpointWarning, match="max_kl: 0.01 -> 0.02"):
        agent = rl.TRPO.resume(finished_run, total_steps=1024)
    assert agent.config.max_kl == 0.02 and agent.config.total_steps == 1024


def test_load_and_eval_of_a_checkpoint_use_its_frozen_statistics(tmp_path, capsys):
    config = small_config(
        tmp_path, env_id="Pendulum-v1", normalize_observations=True, normalize_rewards=True
    )
    agent = rl.TRPO(config).learn(progress="none")
    (tmp_path / "model.pt").unlink()  # as if training had been killed
    loaded = rl.TRPO.load(tmp_path / "checkpoint.pt")
    np.testing.assert_array_equal(loaded.obs_normalizer.mean, agent.obs_normalizer.mean)
    np.testing.assert_array_equal(loaded.obs_normalizer.var, agent.obs_normalizer.var)
    assert loaded.reward_statistics == agent.reward_statistics
    observations = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(observations), agent.predict(observations))
    assert main(["eval", str(tmp_path), "--episodes", "2", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == agent.evaluate(episodes=2)
    assert "using checkpoint.pt at step" in captured.err
    agent.close()
    loaded.close()


# ------------------------------------------------------------------- trpo train --resume
CLI_ARGS = [
    "--seed", "4", "--num-envs", "2", "--set", "steps_per_iteration=256",
    "--set", "policy.hidden_sizes=[8]", "--set", "value.hidden_sizes=[8]",
    "--set", "value.epochs=1", "--set", "checkpoint_every=1", "--quiet",
]  # fmt: skip


def test_cli_resume_continues_a_run_to_the_rows_of_an_uninterrupted_one(tmp_path, capsys):
    whole, split = tmp_path / "whole", tmp_path / "split"
    args = ["train", "CartPole-v1", *CLI_ARGS]
    assert main([*args, "--total-steps", "1024", "--run-dir", str(whole)]) == 0
    assert main([*args, "--total-steps", "512", "--run-dir", str(split)]) == 0
    assert main(["train", "--resume", str(split), "--total-steps", "1024"]) == 0
    assert rows(split) == rows(whole)
    assert yaml.safe_load((split / "config.yaml").read_text())["total_steps"] == 1024
    capsys.readouterr()
    assert main(["train", "--resume", str(split)]) == 0
    assert "is finished (1024 of 1024 steps)" in capsys.readouterr().out
    assert len(rows(split)) == 4


def test_cli_resume_without_a_checkpoint_starts_afresh_and_says_so(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", "CartPole-v1", *CLI_ARGS, "--total-steps", "512", "--run-dir", str(run_dir)]
    assert main(args) == 0
    expected = rows(run_dir)
    for name in ("checkpoint.pt", "checkpoint.prev.pt", "model.pt"):
        (run_dir / name).unlink()
    with open(run_dir / "metrics.jsonl", "a") as file:
        file.write('{"step": 768, "iteration": 3}\n{"step": 10')  # and a torn last line
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert "no checkpoint in" in capsys.readouterr().out
    assert rows(run_dir) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--resume", "RUN", "--seed", "1"], "--seed cannot be given with it"),
        (["train", "CartPole-v1", "--resume", "RUN"], "ENV_ID_OR_CONFIG_FILE cannot be given"),
        (["train", "--resume", "RUN"], "no config.yaml: not a run directory"),
        (["train"], "ENV_ID_OR_CONFIG_FILE is required (or --resume RUN_DIR)"),
    ],
)
def test_cli_resume_usage_errors(args, expected, tmp_path, capsys):
    args = [str(tmp_path / "missing") if arg == "RUN" else arg for arg in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


def test_sigint_to_trpo_train_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    """A real process: Ctrl-C stops training after the iteration with a checkpoint, exit 130."""
    run_dir = tmp_path / "run"
    command = [sys.executable, "-c", "import sys; from rl.cli import main; sys.exit(main())"]
    args = ["train", "CartPole-v1", *CLI_ARGS, "--total-steps", "10000000"]
    args += ["--run-dir", str(run_dir), "--set", "checkpoint_every=0"]
    process = subprocess.Popen(
        command + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert f"trpo train --resume {run_dir}" in err
    checkpoint = read_checkpoint(run_dir / "checkpoint.pt")
    assert checkpoint["progress"]["iteration"] == len(rows(run_dir))
    assert "Traceback" not in err


@pytest.mark.skipif(not hasattr(signal, "SIGTERM"), reason="no SIGTERM")
def test_sigterm_stops_learn_with_a_checkpoint(tmp_path):
    def terminate(agent, row):
        os.kill(os.getpid(), signal.SIGTERM)

    agent = rl.TRPO(small_config(tmp_path, checkpoint_every=0)).learn(
        progress="none", callback=terminate
    )
    assert agent.stopped_by == "SIGTERM" and agent.iteration == 1
    assert read_checkpoint(tmp_path / "checkpoint.pt")["progress"]["iteration"] == 1
