"""Reliability, round two: resumes that would destroy, run directories that would be
overwritten, the newest state for eval, and one-line errors where tracebacks were."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import rl
import rl.cli
import rl.cli_train
import rl.errors
import rl.rollout
from rl.checkpoint import read_checkpoint
from rl.cli import main

TRAIN = [
    "CartPole-v1", "--seed", "2", "--set", "steps_per_iteration=256",
    "--set", "policy.hidden_sizes=[8]", "--set", "value.hidden_sizes=[8]",
    "--set", "eval_episodes=1", "--set", "checkpoint_every=1", "--quiet",
]  # fmt: skip


def snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *TRAIN, "--total-steps", "768", "--run-dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"trpo {command}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


# ----------------------------------------------------------- resumes that would destroy a run
def test_resuming_a_finished_run_without_checkpoints_is_refused_leaving_it_untouched(
    run_copy, capsys
) -> None:
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (run_copy / name).unlink()
    before = snapshot(run_copy)
    assert main(["train", "--resume", str(run_copy), "--quiet"]) == 2
    line = one_error_line(capsys, "train")
    assert "holds a finished run (model.pt) but no checkpoint" in line and "--restart" in line
    assert snapshot(run_copy) == before  # byte for byte, nothing added


def test_restart_starts_the_finished_run_afresh_when_asked(run_copy, capsys) -> None:
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (run_copy / name).unlink()
    assert main(["train", "--resume", str(run_copy), "--restart", "--quiet"]) == 0
    assert "starting afresh" in capsys.readouterr().out
    assert read_checkpoint(run_copy / "checkpoint.pt")["progress"]["iteration"] == 3


def test_restart_needs_resume(capsys, tmp_path) -> None:
    assert main(["train", *TRAIN, "--restart", "--run-dir", str(tmp_path / "r")]) == 2
    assert "--restart goes with --resume" in one_error_line(capsys, "train")


@pytest.mark.parametrize("removed", ["metrics.jsonl", "config.yaml"])
def test_a_directory_holding_any_run_file_is_not_trained_into(run_copy, capsys, removed) -> None:
    (run_copy / removed).unlink()
    before = snapshot(run_copy)
    assert main(["train", "Pendulum-v1", "--run-dir", str(run_copy), "--quiet"]) == 2
    assert "already holds a run" in one_error_line(capsys, "train")
    assert snapshot(run_copy) == before


def test_a_file_given_as_run_dir_is_a_usage_error(tmp_path, capsys) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert main(["train", *TRAIN, "--run-dir", str(target)]) == 2
    assert "is a file, not a directory" in one_error_line(capsys, "train")
    assert target.read_text() == "mine"


# ------------------------------------------------------------------ eval: the newest state
def test_eval_uses_a_checkpoint_newer_than_the_model_and_says_so(
    run_copy, tmp_path, capsys
) -> None:
    """A resumed run killed after a new checkpoint: model.pt is the old run's (step 768),
    checkpoint.pt is ahead of it."""
    old_model = shutil.copy(run_copy / "model.pt", tmp_path / "model-768.pt")
    assert main(["train", "--resume", str(run_copy), "--total-steps", "1280", "--quiet"]) == 0
    shutil.copy(old_model, run_copy / "model.pt")  # as if killed before the final model.pt
    step = read_checkpoint(run_copy / "checkpoint.pt")["model"]["step"]
    capsys.readouterr()
    assert main(["eval", str(run_copy), "--episodes", "1"]) == 0
    expected = f"using checkpoint.pt at step {step} (newer than model.pt at step 768)"
    assert expected in capsys.readouterr().err


def test_eval_falls_back_to_the_previous_checkpoint(run_copy, capsys) -> None:
    (run_copy / "model.pt").unlink()
    (run_copy / "checkpoint.pt").write_bytes(b"garbage")
    assert main(["eval", str(run_copy), "--episodes", "1"]) == 0
    err = capsys.readouterr().err
    assert "using checkpoint.prev.pt at step 512" in err


# ------------------------------------------------------------------- one line, no traceback
@pytest.mark.parametrize(
    ("env_id", "kwarg", "says"),
    [
        ("FrozenLake-v1", "env_kwargs.map_name=9x9", "KeyError: '9x9'"),
        ("LunarLander-v3", "env_kwargs.gravity=5.0", "AssertionError: gravity"),
    ],
)
def test_env_kwargs_the_env_rejects_are_one_line(env_id, kwarg, says, tmp_path, capsys) -> None:
    assert main(["train", env_id, "--set", kwarg, "--run-dir", str(tmp_path / "r")]) == 2
    line = one_error_line(capsys, "train")
    assert "env_kwargs = " in line and says in line


def test_max_kl_at_float_noise_is_refused(tmp_path, capsys) -> None:
    assert main(["train", *TRAIN, "--set", "max_kl=1e-12", "--run-dir", str(tmp_path)]) == 2
    assert "max_kl = 1e-12: Input should be greater than or equal to 0.000001" in one_error_line(
        capsys, "train"
    )


def test_a_rollout_larger_than_memory_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(rl.rollout.os, "sysconf", lambda name: 1024)  # a 1 MiB machine
    code = main(["train", *TRAIN, "--set", "steps_per_iteration=65536", "--run-dir",
                 str(tmp_path / "r")])  # fmt: skip
    assert code == 1
    line = one_error_line(capsys, "train")
    assert "steps_per_iteration = 65536 needs" in line and "choose fewer steps" in line


# ------------------------------------------------------------------- one process per run dir
HOLDER = (
    "import sys, time\n"
    "from rl.run_lock import acquire_run_dir\n"
    "acquire_run_dir(sys.argv[1]); print('held', flush=True); time.sleep(120)\n"
)


def hold_in_another_process(run_dir: Path) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_a_run_dir_in_use_is_refused_naming_the_holder_and_a_stale_lock_is_taken_over(
    tmp_path, capsys
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = hold_in_another_process(run_dir)
    try:
        before = snapshot(run_dir)
        args = ["train", *TRAIN, "--total-steps", "256", "--run-dir", str(run_dir)]
        assert main(args) == 2
        assert f"is in use by process {holder.pid}" in one_error_line(capsys, "train")
        assert snapshot(run_dir) == before  # the holder's .lock only, untouched
    finally:
        holder.kill()  # SIGKILL: its .lock stays behind, unlocked
        holder.wait()
    assert (run_dir / ".lock").exists()
    assert main(args) == 0
    assert not (run_dir / ".lock").exists()  # released and removed at the end


def test_a_resume_while_the_run_is_in_use_is_refused_and_drops_no_row(run_copy, capsys) -> None:
    (run_copy / "metrics.jsonl").write_text(
        (run_copy / "metrics.jsonl").read_text() + '{"iteration": 9, "step": 9999}\n'
    )
    holder = hold_in_another_process(run_copy)
    try:
        before = snapshot(run_copy)
        assert main(["train", "--resume", str(run_copy), "--total-steps", "2048"]) == 2
        assert f"is in use by process {holder.pid}" in one_error_line(capsys, "train")
        assert snapshot(run_copy) == before
    finally:
        holder.kill()
        holder.wait()


def test_default_run_dirs_started_in_the_same_second_are_distinct(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rl.cli_train.time, "strftime", lambda _: "20261127-000000")
    first = rl.cli_train._default_run_dir("CartPole-v1", 0)
    second = rl.cli_train._default_run_dir("CartPole-v1", 0)
    assert first != second and Path(first).is_dir() and Path(second).is_dir()
    assert second == f"{first}-2"


# ------------------------------------------------------------------------ devices not here
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_a_cuda_device_without_a_gpu_is_one_line(tmp_path, capsys) -> None:
    assert main(["train", *TRAIN, "--set", "device=cuda", "--run-dir", str(tmp_path / "r")]) == 2
    line = one_error_line(capsys, "train")
    assert "device = 'cuda': this torch" in line and "use device=cpu" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_a_run_trained_on_a_gpu_is_evaluated_on_the_cpu_here(run_copy, capsys) -> None:
    """As if trained on a GPU machine: its saved config says cuda."""
    state = torch.load(run_copy / "model.pt", weights_only=True)
    state["config"]["device"] = "cuda"
    torch.save(state, run_copy / "model.pt")
    assert main(["eval", str(run_copy), "--episodes", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert "device = 'cuda': this torch" in captured.err and "using the CPU" in captured.err
    assert main(["eval", str(run_copy), "--episodes", "1", "--device", "cuda"]) == 2
    assert "device = 'cuda'" in one_error_line(capsys, "eval")
    assert main(["eval", str(run_copy), "--episodes", "1", "--device", "cpu", "--json"]) == 0


# ------------------------------------------------------------------ config.yaml on resume
def test_an_invalid_config_yaml_is_named_on_resume(run_copy, capsys) -> None:
    config = run_copy / "config.yaml"
    config.write_text(config.read_text().replace("max_kl: 0.01", "max_kl: -1.0"))
    assert main(["train", "--resume", str(run_copy), "--quiet"]) == 2
    line = one_error_line(capsys, "train")
    assert f"{config}: invalid config: max_kl = -1.0" in line


def test_a_key_missing_from_an_older_config_yaml_takes_the_checkpoints_value(run_copy) -> None:
    config = run_copy / "config.yaml"
    lines = config.read_text().splitlines(keepends=True)
    config.write_text("".join(line for line in lines if not line.startswith("steps_per_iter")))
    agent = rl.TRPO.resume(run_copy)
    try:
        assert agent.config.steps_per_iteration == 256  # the checkpoint's, not the default 2048
    finally:
        agent.close()


# ------------------------------------------------------------- garbled rows in the run's files
def test_garbled_and_non_utf8_rows_are_repaired_on_resume_saying_what(run_copy, capsys) -> None:
    metrics = run_copy / "metrics.jsonl"
    rows = metrics.read_bytes().splitlines(keepends=True)  # iterations 1, 2, 3
    metrics.write_bytes(rows[0] + b'{"iteration": 2, "st\n' + b"\xff\xfe x\n" + b"".join(rows[1:]))
    assert main(["train", "--resume", str(run_copy), "--total-steps", "1024", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("warning: metrics.jsonl: dropped 2 unreadable line(s) (not UTF-8 or not JSON: "
            "line 2, 3); kept the 3 intact row(s) up to the checkpoint") in err  # fmt: skip
    iterations = [json.loads(line)["iteration"] for line in metrics.read_text().splitlines()]
    assert iterations == [1, 2, 3, 4]


# --------------------------------------------------------- evaluations that would never end
NO_TIME_LIMIT = ["--set", "env_kwargs.max_episode_steps=-1"]  # Pendulum never terminates


def test_an_evaluation_of_an_env_without_time_limit_ends_at_the_step_cap(tmp_path) -> None:
    config = rl.TRPOConfig(env_id="Pendulum-v1", env_kwargs={"max_episode_steps": -1},
                           eval_max_episode_steps=300)  # fmt: skip
    agent = rl.TRPO(config)
    try:
        stats = agent.evaluate(episodes=3)
    finally:
        agent.close()
    assert stats["mean_length"] == 300
    assert rl.TRPO(config.with_overrides({"eval_max_episode_steps": None})).eval_step_cap == 10_000
    assert rl.TRPO(rl.TRPOConfig(env_id="CartPole-v1")).eval_step_cap == 500  # its time limit


def test_the_first_signal_during_an_endless_evaluation_stops_with_a_checkpoint(tmp_path) -> None:
    run_dir = tmp_path / "run"
    command = [sys.executable, "-c", "import sys; from rl.cli import main; sys.exit(main())",
               "train", "Pendulum-v1", *NO_TIME_LIMIT, "--set", "eval_max_episode_steps=1000000000",
               "--set", "steps_per_iteration=256", "--set", "checkpoint_every=0",
               "--total-steps", "512", "--quiet", "--run-dir", str(run_dir)]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    time.sleep(1.0)  # well into the final evaluation, which would never end
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGINT, err
    assert "evaluation at step 512 skipped: SIGINT received" in err and "Traceback" not in err
    assert read_checkpoint(run_dir / "checkpoint.pt")["progress"]["iteration"] == 2


def test_the_episode_recorder_is_bounded_and_an_outgrown_episode_is_not_replayed(
    monkeypatch,
) -> None:
    from rl.replay import EpisodeRecorder

    monkeypatch.setattr(EpisodeRecorder, "MAX_REPLAY_ACTIONS", 5)
    env = EpisodeRecorder(gym.make("Pendulum-v1", max_episode_steps=-1))
    env.reset(seed=1)
    for _ in range(4):
        env.step(env.action_space.sample())
    record = env.episode_record()
    assert record["replayable"] and len(record["actions"]) == 4
    twin = EpisodeRecorder(gym.make("Pendulum-v1", max_episode_steps=-1))
    twin.replay_request = record
    assert twin.replay() is True
    for _ in range(3):  # 7 actions: past the bound
        env.step(env.action_space.sample())
    record = env.episode_record()
    assert not record["replayable"] and record["actions"] is None and env.episode_actions == []
    twin.replay_request = record
    assert twin.replay() is False  # the resume warns: not bit for bit
    env.reset(seed=2)
    env.step(env.action_space.sample())
    assert env.episode_record()["replayable"]


# ------------------------------------------------------------------ custom envs that misbehave
class MisbehavingEnv(gym.Env):
    """Box(3) observations; from step 5 of an episode, a wrong shape or an array reward."""

    def __init__(self, fault: str = "shape") -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.fault, self.t = fault, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(3, np.float32), {}

    def step(self, action):
        self.t += 1
        observation, reward = np.zeros(3, np.float32), 1.0
        if self.t >= 5 and self.fault == "shape":
            observation = np.zeros(4, np.float32)
        if self.t >= 5 and self.fault == "reward":
            reward = np.ones(2)
        return observation, reward, False, self.t >= 50, {}


def misbehaving_shape() -> MisbehavingEnv:
    return MisbehavingEnv("shape")


def misbehaving_reward() -> MisbehavingEnv:
    return MisbehavingEnv("reward")


@pytest.mark.parametrize(
    ("factory", "says"),
    [
        (misbehaving_shape, "sub-env 0 returned an observation of shape (4,); its observation "
                            "space is Box(-1.0, 1.0, (3,), float32) (shape (3,))"),
        (misbehaving_reward, "sub-env 0 returned a reward of shape (2,) (ndarray): a reward "
                             "must be one number"),
    ],
)  # fmt: skip
def test_a_custom_env_returning_misfits_is_named_with_its_factory_and_step(factory, says) -> None:
    agent = rl.TRPO(rl.TRPOConfig(total_steps=256, steps_per_iteration=128), env_fn=factory)
    with pytest.raises(rl.errors.EnvOutputError) as error:
        agent.learn(progress="none")
    message = str(error.value)
    assert message.startswith(f"env '{factory.__qualname__}': {says} in iteration 1")
