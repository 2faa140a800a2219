"""A short run of benchmarks/crash_safety.py: ``trpo train`` killed with SIGKILL while it
keeps the previous checkpoint (before the hard link, and before its rename) and while it
updates, resumed after each kill, ends with the rows of a run that was never killed. The
script itself does 20 kills (see its docstring)."""

from __future__ import annotations

import importlib.util
import random
import sys
from pathlib import Path

from rl.cli import main

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "crash_safety.py"


def load_script():
    spec = importlib.util.spec_from_file_location("crash_safety", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # for its dataclass
    spec.loader.exec_module(module)
    return module


def test_sigkill_at_checkpoint_writes_and_updates_loses_nothing(tmp_path):
    crash_safety = load_script()
    arguments = [
        "--env", "CartPole-v1", "--seed", "0", "--vector-mode", "sync",
        "--iterations", "6", "--steps-per-iteration", "128",
    ]  # fmt: skip
    args = crash_safety.build_parser().parse_args(arguments)
    baseline, run_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    assert main(crash_safety.train_argv(args, baseline)) == 0
    log = tmp_path / "killed.log"
    kills, _ = crash_safety.crash_and_resume(
        run_dir,
        crash_safety.train_argv(args, run_dir),
        kills=3,
        rng=random.Random(0),
        write_delay=0.05,
        targets=["checkpoint:link", "checkpoint:replace", "update"],
        log=log,
        finish=False,
    )
    assert [kill.phase for kill in kills] == ["checkpoint:link", "checkpoint:replace", "update"]
    assert [problem for kill in kills for problem in kill.problems] == []
    assert all(kill.checkpoint_iteration for kill in kills)  # each resumes a checkpoint
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert crash_safety.check_final(run_dir, baseline, log, 0) == []
