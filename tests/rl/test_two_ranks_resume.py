"""Two ranks under torchrun with evaluations, checkpoints and normalization, stopped by a
SIGINT to one rank and resumed, or with a rank SIGKILLed under ``--max-restarts``: every
iteration once, the rows of the uninterrupted job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import rows

ARGS = [
    "Pendulum-v1", "--seed", "7", "--total-steps", "24576",  # 24 iterations of 2 x 512
    "--set", "steps_per_iteration=512", "--set", "normalize_observations=true",
    "--set", "normalize_rewards=true", "--set", "eval_every=4096", "--set", "eval_episodes=2",
    "--set", "checkpoint_every=5", "--quiet",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(*args: str, restarts: int = 0) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        f"--max-restarts={restarts}", "-m", "rl.train", *args,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted job."""
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    subprocess.run(torchrun(*ARGS, "--run-dir", str(run_dir)), env=ENV, check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    return run_dir


def start_and_wait_for_rows(run_dir: Path, count: int, restarts: int = 0) -> subprocess.Popen:
    job = subprocess.Popen(
        torchrun(*ARGS, "--run-dir", str(run_dir), restarts=restarts), env=ENV,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= count):
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()
        time.sleep(0.02)
    return job


def workers(job: subprocess.Popen) -> list[int]:
    found = [p for p in children(job.pid) if "rl.train" in Path(f"/proc/{p}/cmdline").read_text()]
    assert len(found) == 2, found
    return found


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_sigint_to_one_rank_stops_the_job_with_a_checkpoint_and_resume_is_exact(
    reference, tmp_path
):
    run_dir = tmp_path / "interrupted"
    job = start_and_wait_for_rows(run_dir, 3)
    os.kill(max(workers(job)), signal.SIGINT)  # one rank: the other must agree to stop with it
    _, err = job.communicate(timeout=300)
    assert "stopped by SIGINT" in err, err
    stopped_at = len(rows(run_dir))
    assert 3 <= stopped_at < 24, "the job ended before the signal: nothing was tested"

    resumed = subprocess.run(torchrun("--resume", str(run_dir), "--quiet"), env=ENV,
                             capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert [row["iteration"] for row in rows(run_dir)] == list(range(1, 25))
    assert rows(run_dir) == rows(reference)
    assert rows(run_dir, "evals.jsonl") == rows(reference, "evals.jsonl")


def test_a_rank_killed_under_max_restarts_is_restarted_and_the_run_resumes_exactly(
    reference, tmp_path
):
    """torchrun restarts the job; rl.train resumes RUN_DIR from its last checkpoint by
    itself (TorchElastic's contract), redoing only the iterations since."""
    run_dir = tmp_path / "restarted"
    job = start_and_wait_for_rows(run_dir, 7, restarts=3)  # past the checkpoint of iteration 5
    os.kill(max(workers(job)), signal.SIGKILL)
    _, err = job.communicate(timeout=600)
    assert job.returncode == 0, err[-3000:]
    assert f"restart 1 of at most 3: resuming {run_dir} from its last checkpoint" in err
    assert [row["iteration"] for row in rows(run_dir)] == list(range(1, 25))
    assert rows(run_dir) == rows(reference)
    assert rows(run_dir, "evals.jsonl") == rows(reference, "evals.jsonl")


def test_max_restarts_without_a_run_dir_is_refused(tmp_path):
    args = [a for a in ARGS if a != "--quiet"]
    done = subprocess.run(torchrun(*args, restarts=2), env=ENV, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)  # fmt: skip
    assert done.returncode != 0
    assert "rl.train: error: --max-restarts 2 needs --run-dir RUN_DIR" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_the_run_dir_of_a_restartable_job_may_come_from_a_config_file_or_set(tmp_path):
    from rl.cli import build_parser
    from rl.train import _run_dir_of

    config = tmp_path / "job.yaml"
    config.write_text(f"env_id: Pendulum-v1\nrun_dir: {tmp_path / 'from-file'}\n")
    parse = build_parser().parse_args
    assert _run_dir_of(parse(["train", str(config)])) == str(tmp_path / "from-file")
    assert _run_dir_of(parse(["train", str(config), "--set", "run_dir=elsewhere"])) == "elsewhere"
    assert _run_dir_of(parse(["train", "Pendulum-v1"])) is None
