"""Training on GPUs: each rank's device, CUDA RNG states across machines with other GPU
counts, one rank on CUDA against the CPU, and two ranks on NCCL. The GPU tests skip
without CUDA (or with fewer than two GPUs for NCCL); the device arithmetic runs anywhere."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from rl import TRPO, TRPOConfig
from rl.checkpoint import read_checkpoint
from rl.comm import rank_device
from rl.loop import update
from rl.rollout import RolloutCollector
from rl.state import capture_rng_states, cuda_rng_state_for, restore_rng_states
from tests.conftest import rows

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
needs_two_gpus = pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.cuda.device_count() >= 2 and dist.is_nccl_available()),
    reason="needs two CUDA GPUs and NCCL",
)


@pytest.mark.parametrize(
    ("configured", "local_rank", "expected"),
    [("cuda", 0, "cuda:0"), ("cuda", 3, "cuda:3"), ("cuda:4", 1, "cuda:5"), ("cpu", 2, "cpu")],
)
def test_each_rank_trains_on_the_gpu_of_its_local_rank(configured, local_rank, expected):
    assert rank_device(torch.device(configured), local_rank) == torch.device(expected)


def test_a_cuda_rng_state_is_taken_for_this_gpu_whatever_the_saving_machine_had():
    own, first, second = (torch.full((4,), value, dtype=torch.uint8) for value in (7, 1, 2))
    assert cuda_rng_state_for({"device": 3, "state": own}, 0) is own  # saved on GPU 3
    assert cuda_rng_state_for([first, second], 1) is second  # older: every GPU's, by index
    assert cuda_rng_state_for([first], 1) is None  # saved where there were fewer GPUs


@needs_cuda
def test_the_cuda_rng_state_of_this_process_gpu_is_restored():
    generators = {"actions": torch.Generator(device="cuda").manual_seed(0)}
    torch.randn(3, device="cuda")  # CUDA initialised: its state is captured
    saved = capture_rng_states(generators)
    assert saved["cuda"]["device"] == torch.cuda.current_device()
    expected = torch.randn(5, device="cuda")
    restore_rng_states(saved, generators)
    torch.testing.assert_close(torch.randn(5, device="cuda"), expected, rtol=0, atol=0)
    many = [saved["cuda"]["state"]] * (torch.cuda.device_count() + 4)  # a larger machine's
    restore_rng_states({**saved, "cuda": many}, generators)
    restore_rng_states({**saved, "cuda": []}, generators)  # a machine without GPUs: skipped


def updated_row(agent: TRPO, rollout) -> dict:
    """The metrics row of ``agent``'s update on ``rollout``, its value fit done."""
    row, fit, _ = update(agent, rollout, None)
    return {**row, "value_loss": fit.result()}


def compare_updates(device: str, env_id: str = "Pendulum-v1", iterations: int = 3) -> None:
    """Both agents update on the same rollouts (collected by the CPU agent): the rows and
    the policy of ``device`` match the CPU's to float32 rounding."""
    config = TRPOConfig.from_preset(env_id, source="zoo").with_overrides(
        {"seed": 3, "steps_per_iteration": 512, "value_fit_in_background": False}
    )
    cpu, other = TRPO(config), TRPO(config.with_overrides({"device": device}))
    envs = cpu._make_envs(config.num_envs, training=True)
    collector = RolloutCollector(envs, cpu.policy, config.steps_per_env, cpu.action_generator)
    collector.reset(seed=cpu.env_seed)
    try:
        for _ in range(iterations):
            rollout = collector.collect()
            want, got = (updated_row(agent, rollout) for agent in (cpu, other))
            assert (got["accepted"], got["backtracks"]) == (want["accepted"], want["backtracks"])
            assert abs(got["cg_iterations"] - want["cg_iterations"]) <= 1
            for key in ("kl", "value_loss", "surrogate_improvement", "expected_improvement"):
                assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-7), key
            pairs = zip(other.policy.parameters(), cpu.policy.parameters(), strict=True)
            for theirs, ours in pairs:
                torch.testing.assert_close(theirs.detach().cpu(), ours.detach(), rtol=1e-4,
                                           atol=1e-5)  # fmt: skip
    finally:
        envs.close()


@needs_cuda
@pytest.mark.parametrize("env_id", ["Pendulum-v1", "HalfCheetah-v5"])
def test_one_rank_on_cuda_takes_the_cpu_updates_of_the_first_iterations(env_id):
    compare_updates("cuda", env_id)


@needs_two_gpus
def test_two_ranks_on_nccl_train_each_on_its_own_gpu_and_checkpoint_its_rng(tmp_path):
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "-m", "rl.train", "Pendulum-v1", "--seed", "2", "--total-steps", "3072",
        "--set", "steps_per_iteration=512", "--set", "device=cuda",
        "--set", "checkpoint_every=1", "--run-dir", str(run_dir),
    ]  # fmt: skip
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(cpu:gloo,cuda:nccl)" in done.stdout  # (two ranks on one GPU: NCCL refuses)
    assert [row["iteration"] for row in rows(run_dir)] == [1, 2, 3]
    checkpoint = read_checkpoint(run_dir / "checkpoint.pt")
    gpus = [part["rng"]["cuda"]["device"] for part in checkpoint["rank_states"]]
    assert gpus == [0, 1]
    resumed = subprocess.run(
        [*command[:6], "rl.train", "--resume", str(run_dir), "--total-steps", "4096"],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [row["iteration"] for row in rows(run_dir)] == [1, 2, 3, 4]
