"""`trpo train` / `trpo eval` end to end, and their one-line usage errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rl import TRPO, TRPOConfig
from rl.cli import main

METRIC_KEYS = {
    "step", "iteration", "episode_return_mean", "episode_length_mean", "kl", "entropy",
    "value_loss", "explained_variance", "fps", "time", "accepted", "backtracks",
}  # fmt: skip


# the installed console script's code path in a fresh interpreter
TRPO_COMMAND = [sys.executable, "-c", "import sys; from rl.cli import main; sys.exit(main())"]


def run_trpo(*args, cwd=None):
    """The installed console script's code path in a fresh interpreter, stdout not a TTY."""
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        TRPO_COMMAND + list(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "cartpole"
    result = run_trpo(
        "train", "CartPole-v1", "--total-steps", "2048", "--seed", "3", "--num-envs", "4",
        "--run-dir", str(run_dir), "--set", "steps_per_iteration=512",
        "--set", "policy.hidden_sizes=[16]", "--set", "eval_every=1024",
        "--set", "eval_episodes=3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return run_dir, result


def test_train_writes_config_metrics_evals_and_model(tiny_run):
    run_dir, _ = tiny_run
    config = TRPOConfig.from_file(run_dir / "config.yaml")
    assert (config.env_id, config.seed, config.num_envs) == ("CartPole-v1", 3, 4)
    assert config.policy.hidden_sizes == (16,)
    assert config.damping == 1e-3  # the CartPole preset applied under the flags
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [512, 1024, 1536, 2048]
    assert [row["iteration"] for row in rows] == [1, 2, 3, 4]
    for row in rows:
        assert row.keys() >= METRIC_KEYS
        assert 0 <= row["kl"] <= config.max_kl * (1 + 1e-6)
        assert row["entropy"] > 0 and row["fps"] > 0 and row["value_loss"] >= 0
        assert isinstance(row["accepted"], bool) and row["backtracks"] >= 0
        assert 8 <= row["episode_length_mean"] <= 500
    evals = [json.loads(line) for line in (run_dir / "evals.jsonl").read_text().splitlines()]
    assert [row["step"] for row in evals] == [1024, 2048]
    assert all({"mean_return", "std_return", "time"} <= row.keys() for row in evals)
    assert (run_dir / "model.pt").is_file()


def test_plain_lines_when_stdout_is_not_a_tty(tiny_run):
    _, result = tiny_run
    lines = result.stdout.splitlines()
    iteration_lines = [line for line in lines if line.startswith("iter ")]
    assert len(iteration_lines) == 4
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    assert iteration_lines[0].startswith("iter 1 step 512/2048 return ")
    assert lines[-1].startswith("done: steps 2048, iterations 4")
    assert "eval_mean_return" in lines[-1]


def test_eval_json_prints_exactly_one_line(tiny_run):
    run_dir, _ = tiny_run
    result = run_trpo("eval", str(run_dir), "--episodes", "3", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1
    stats = json.loads(result.stdout)
    assert set(stats) == {"mean_return", "std_return", "mean_length"}
    assert stats["mean_return"] == stats["mean_length"]  # CartPole pays 1 per step


def test_eval_human_readable(tiny_run, capsys):
    run_dir, _ = tiny_run
    assert main(["eval", str(run_dir), "--episodes", "2"]) == 0
    assert capsys.readouterr().out.startswith("mean return ")


def test_quiet_prints_only_the_summary(tmp_path, capsys):
    code = main(
        ["train", "CartPole-v1", "--total-steps", "512", "--run-dir", str(tmp_path / "q"),
         "--set", "steps_per_iteration=512", "--set", "eval_episodes=2", "--quiet"]
    )  # fmt: skip
    assert code == 0
    output = capsys.readouterr().out.splitlines()
    assert len(output) == 1 and output[0].startswith("done: steps 512")


def test_config_file_target_with_flags_on_top(tmp_path, capsys):
    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        yaml.safe_dump({"env_id": "CartPole-v1", "steps_per_iteration": 256, "num_envs": 1,
                        "eval_episodes": 1, "total_steps": 10_000})
    )  # fmt: skip
    run_dir = tmp_path / "from-file"
    code = main(["train", str(config_file), "--total-steps", "256", "--run-dir", str(run_dir),
                 "--quiet"])  # fmt: skip
    assert code == 0
    config = TRPOConfig.from_file(run_dir / "config.yaml")
    assert (config.total_steps, config.steps_per_iteration, config.num_envs) == (256, 256, 1)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "CartPole-v1", "--set", "max_kl=-1"], "max_kl = -1"),
        (["train", "CartPole-v1", "--set", "vector_mode=gpu"], "vector_mode = 'gpu'"),
        (["train", "CartPole-v1", "--set", "max_kll=1"], "unknown config field 'max_kll'"),
        (["train", "CartPole-v1", "--num-envs", "3"], "must be a multiple of num_envs = 3"),
        (["train", "CartPole-v1", "--total-steps", "ten"], "invalid int value: 'ten'"),
        (["train", "NoSuchEnv-v0"], "env_id = 'NoSuchEnv-v0'"),
        (["train", "missing.yaml"], "cannot read config file 'missing.yaml'"),
        (["train", "CartPole-v1", "--set", "env_kwargs.bogus=1"], "bogus"),
        (["eval", "no-such-run"], "RUN_DIR = 'no-such-run': no such directory"),
        (["eval", "no-such-run", "--episodes", "0"], "must be a positive integer, got '0'"),
    ],
)
def test_usage_errors_exit_2_with_one_line_and_no_traceback(args, expected, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main([*args, *(["--run-dir", str(tmp_path / "r")] if args[0] == "train" else [])]))
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert expected in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


def test_usage_error_in_a_real_process_has_no_traceback():
    result = run_trpo("train", "CartPole-v1", "--set", "gamma=2")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "trpo train: error: invalid config: gamma = 2: Input should be less than or equal to 1"
    ]


def test_train_help_lists_every_config_field_with_its_range(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    assert "max_kl" in help_text and "Trust-region radius" in help_text and "> 0" in help_text
    assert "value.minibatch_size" in help_text
    assert "one of sync, async" in help_text


def test_existing_run_is_not_overwritten(tiny_run, capsys):
    run_dir, _ = tiny_run
    assert main(["train", "CartPole-v1", "--run-dir", str(run_dir)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_a_run_that_cannot_start_leaves_no_default_run_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "CartPole-v1", "--set", "env_kwargs={bad_argument: 1}"]) == 2
    error = capsys.readouterr().err
    assert "cannot build the agent for env_id = 'CartPole-v1'" in error
    assert list((tmp_path / "runs").iterdir()) == []  # the run directory made for it: gone


def test_a_device_this_machine_lacks_is_named_as_the_config_field(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", "CartPole-v1", "--run-dir", str(tmp_path / "r"),
                 "--set", "device=cuda"]) == 2  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert error.startswith("trpo train: error: device = 'cuda': this torch"), error


def test_load_takes_a_run_directory(tiny_run):
    run_dir, _ = tiny_run
    agent = TRPO.load(run_dir)
    assert agent.step == TRPO.load(Path(run_dir) / "model.pt").step > 0


def test_output_cut_short_by_its_reader_exits_141_without_a_traceback():
    """`trpo presets | head -1`: the reader has gone (closed here before the command has
    imported its modules, so before its first line); no BrokenPipeError traceback."""
    for args in (["presets"], ["presets", "HalfCheetah-v5"]):
        process = subprocess.Popen(
            TRPO_COMMAND + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        process.stdout.close()
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=60) == 141, stderr
        assert stderr == ""
