"""SIGTERM and SIGINT stop ``trpo train`` cleanly with a checkpoint and say how to resume;
a second signal during a checkpoint write keeps the last complete checkpoint. (The SIGINT
to a single process is in test_checkpoint.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import rl.checkpoint
import rl.run_files
from rl.checkpoint import read_checkpoint
from rl.cli import main
from tests.conftest import rows

TRAIN_ARGS = [
    "CartPole-v1", "--seed", "4", "--num-envs", "2", "--set", "steps_per_iteration=256",
    "--set", "policy.hidden_sizes=[8]", "--set", "value.hidden_sizes=[8]",
    "--set", "value.epochs=1", "--set", "eval_episodes=1", "--quiet",
]  # fmt: skip


def start_training(run_dir, *extra):
    command = [sys.executable, "-c", "import sys; from rl.cli import main; sys.exit(main())"]
    args = ["train", *TRAIN_ARGS, "--total-steps", "10000000", "--run-dir", str(run_dir)]
    return subprocess.Popen(
        command + args + list(extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_rows(process, run_dir, count=1):
    metrics, deadline = Path(run_dir) / "metrics.jsonl", time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= count):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.02)


def assert_resumes_to_the_uninterrupted_rows(run_dir, tmp_path, capsys):
    iterations = read_checkpoint(Path(run_dir) / "checkpoint.pt")["progress"]["iteration"]
    total = str((iterations + 2) * 256)
    whole = tmp_path / "whole"
    assert main(["train", *TRAIN_ARGS, "--total-steps", total, "--run-dir", str(whole)]) == 0
    assert main(["train", "--resume", str(run_dir), "--total-steps", total, "--quiet"]) == 0
    assert rows(run_dir) == rows(whole)
    capsys.readouterr()


@pytest.mark.parametrize(
    ("name", "vector_mode", "to_group"),
    [("SIGTERM", "sync", False), ("SIGINT", "async", True), ("SIGHUP", "sync", False)],
    ids=[
        "SIGTERM to the process",
        "Ctrl-C to the process group with async workers",
        "SIGHUP (terminal closed) to the process",
    ],
)
def test_signal_stops_trpo_train_with_a_checkpoint_and_a_resume_command(
    tmp_path, capsys, name, vector_mode, to_group
):
    """checkpoint_every=0: the checkpoint is the signal's. Async workers ignore the
    Ctrl-C that the terminal sends to the whole group, so the main process can still step
    them to the end of the iteration and save their state."""
    run_dir = tmp_path / "run"
    process = start_training(
        run_dir, "--set", "checkpoint_every=0", "--set", f"vector_mode={vector_mode}"
    )
    wait_for_rows(process, run_dir)
    number = signal.Signals[name]
    if to_group:
        os.killpg(process.pid, number)
    else:
        process.send_signal(number)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + number, err
    assert f"stopped by {name}" in err and f"continue with: trpo train --resume {run_dir}" in err
    assert "Traceback" not in err
    checkpoint = read_checkpoint(run_dir / "checkpoint.pt")
    assert checkpoint["progress"]["iteration"] == len(rows(run_dir))
    with pytest.raises(ProcessLookupError):  # no worker outlived the run
        os.killpg(process.pid, 0)
    assert_resumes_to_the_uninterrupted_rows(run_dir, tmp_path, capsys)


def test_second_sigint_during_a_checkpoint_write_keeps_the_last_checkpoint(
    tmp_path, monkeypatch, capsys
):
    """Two Ctrl-C while the checkpoint of iteration 3 is half written: the first asks for a
    stop after the iteration, the second interrupts the write at once. The temporary file
    goes, checkpoint.pt stays iteration 2, and the CLI says how to resume."""
    real_save = rl.run_files.torch.save

    def interrupted_save(state, file):
        if isinstance(state, dict) and state.get("progress", {}).get("iteration") == 3:
            file.write(b"PK\x03\x04 half a checkpoint")
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real_save(state, file)

    monkeypatch.setattr(rl.run_files.torch, "save", interrupted_save)
    run_dir = tmp_path / "run"
    args = ["train", *TRAIN_ARGS, "--total-steps", "1536", "--run-dir", str(run_dir)]
    assert main([*args, "--set", "checkpoint_every=1"]) == 130
    err = capsys.readouterr().err
    assert "SIGINT received: stopping after this iteration" in err
    assert (
        f"interrupted; continue from the last checkpoint with: trpo train --resume {run_dir}" in err
    )
    assert read_checkpoint(run_dir / "checkpoint.pt")["progress"]["iteration"] == 2
    assert read_checkpoint(run_dir / "checkpoint.prev.pt")["progress"]["iteration"] == 1
    assert not [path.name for path in run_dir.iterdir() if path.name.endswith(".tmp")]
    monkeypatch.undo()
    assert_resumes_to_the_uninterrupted_rows(run_dir, tmp_path, capsys)
