"""Two ranks under torchrun with evaluations, checkpoints and normalization, stopped by a
SIGINT to one rank and resumed: every iteration once, the rows of the uninterrupted job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import rows

ARGS = [
    "Pendulum-v1", "--seed", "7", "--total-steps", "24576",  # 24 iterations of 2 x 512
    "--set", "steps_per_iteration=512", "--set", "normalize_observations=true",
    "--set", "normalize_rewards=true", "--set", "eval_every=4096", "--set", "eval_episodes=2",
    "--set", "checkpoint_every=5", "--quiet",
]  # fmt: skip
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(*args: str) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "-m", "rl.train", *args,
    ]  # fmt: skip


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


def test_sigint_to_one_rank_stops_the_job_with_a_checkpoint_and_resume_is_exact(tmp_path):
    reference = tmp_path / "uninterrupted"
    subprocess.run(torchrun(*ARGS, "--run-dir", str(reference)), env=ENV, check=True,
                   capture_output=True, timeout=600)  # fmt: skip

    run_dir = tmp_path / "interrupted"
    job = subprocess.Popen(
        torchrun(*ARGS, "--run-dir", str(run_dir)), env=ENV,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()
        time.sleep(0.02)
    workers = [p for p in children(job.pid) if "rl.train" in Path(f"/proc/{p}/cmdline").read_text()]
    assert len(workers) == 2, workers
    os.kill(max(workers), signal.SIGINT)  # one rank: the other must agree to stop with it
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
