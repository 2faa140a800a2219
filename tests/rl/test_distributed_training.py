"""Data-parallel TRPO (rl.distributed, rl.train) with gloo ranks spawned on the CPU.

Each fixture spawns its ranks once and saves what they computed; the tests compare that
with single-process references computed here.
"""

from __future__ import annotations

import faulthandler
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from gymnasium.wrappers.utils import RunningMeanStd
from torch import nn

import rl
from rl.checkpoint import read_checkpoint
from rl.cli import main as trpo_main
from rl.distributed import (
    DistributedComm,
    RunningMoments,
    fit_value_data_parallel,
    merge_running_moments,
    minibatch_shares,
    rank_seed,
)
from rl.run_files import CheckpointError
from tests.conftest import rows

SHARDS = (37, 45)  # unequal: the ranks' parts of the last minibatches differ, one is empty
MINIBATCH, EPOCHS = 8, 3
TRAIN_ARGS = ["CartPole-v1", "--seed", "4", "--set", "steps_per_iteration=256", "--quiet"]
EVALUATING = [
    "Pendulum-v1", "--seed", "5", "--set", "steps_per_iteration=256", "--set", "eval_every=512",
    "--set", "eval_episodes=2", "--set", "checkpoint_every=3", "--set",
    "normalize_observations=true", "--set", "normalize_rewards=true", "--quiet",
]  # fmt: skip
PER_RANK_STEPS = 256


def spawn(worker, world_size: int, directory: Path, *args) -> None:
    """Start ``worker(rank, world_size, store, *args)`` in ``world_size`` fresh processes;
    ``store`` is a new file in ``directory`` for the rendezvous (no port that a concurrent
    test run could take)."""
    store = str(directory / f"rendezvous-{worker.__name__}")
    mp.start_processes(
        worker, args=(world_size, store, *args), nprocs=world_size, start_method="spawn"
    )


def join_group(rank: int, world_size: int, store: str) -> None:
    """What torchrun does for each rank: its variables, then the default group."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1", MASTER_PORT="0",
    )  # fmt: skip
    faulthandler.enable(all_threads=True)  # a crash in a rank shows its threads' stacks
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)


def leave() -> None:
    """A rank that finished and saved its results exits without gloo's teardown, which has
    aborted spawned ranks at exit ("terminate called without an active exception", seen in
    full runs of tests/test_distributed.py and tests/test_head.py)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ----------------------------------------------------------------- value fit, statistics
def value_problem():
    torch.manual_seed(0)
    value = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    observations = torch.randn(sum(SHARDS), 3, dtype=torch.float64)
    returns = observations.sum(1).sin() * 3 + 1
    return rl.value.ValueNetwork(value), observations, returns


def statistics_data():
    generator = torch.Generator().manual_seed(1)
    common = torch.randn(50, 3, generator=generator, dtype=torch.float64).numpy()
    rank_batches = [
        [
            (
                1000.0 + (rank + 1) * torch.randn(n, 3, generator=generator, dtype=torch.float64)
            ).numpy()
            for n in (16, 7, 30)
        ]
        for rank in range(2)
    ]
    return common, rank_batches


def unit_worker(rank: int, world_size: int, store: str, out: str) -> None:
    join_group(rank, world_size, store)
    try:
        value, observations, returns = value_problem()
        shard = slice(sum(SHARDS[:rank]), sum(SHARDS[: rank + 1]))
        optimizer = torch.optim.Adam(value.parameters(), lr=1e-2)
        loss = fit_value_data_parallel(
            value, optimizer, observations[shard], returns[shard], EPOCHS, MINIBATCH,
            torch.Generator().manual_seed(10 + rank), dist.group.WORLD,
        )  # fmt: skip
        data_parallel = [p.detach().clone() for p in value.parameters()]
        replicated = {}
        for dtype in (torch.float64, torch.float32):
            value, observations, returns = value_problem()
            value, observations, returns = (
                value.to(dtype),
                observations.to(dtype),
                returns.to(dtype),
            )
            optimizer = torch.optim.Adam(value.parameters(), lr=1e-2)
            # what rl.loop does: the job's batch gathered (DistributedComm.value_batch),
            # then the single-process fit with K times the minibatch
            comm = DistributedComm()
            comm.setup("replicate", torch.device("cpu"))
            batch_observations, batch_returns, factor = comm.value_batch(
                observations[shard], returns[shard]
            )
            replicated_loss = rl.value.fit_value(
                value, optimizer, batch_observations, batch_returns, EPOCHS,
                MINIBATCH * factor, torch.Generator().manual_seed(10),
            )  # fmt: skip
            replicated[str(dtype)] = ([p.detach() for p in value.parameters()], replicated_loss)
        common, rank_batches = statistics_data()
        merged = {}
        for shape, pick in (((3,), lambda x: x), ((), lambda x: x[:, 0])):
            statistics = RunningMeanStd(shape=shape)
            statistics.update(pick(common))
            reference = RunningMoments.of(statistics)
            for batch in rank_batches[rank]:
                statistics.update(pick(batch))
            merge_running_moments(statistics, reference, dist.group.WORLD)
            merged[str(shape)] = (statistics.mean, statistics.var, statistics.count)
        torch.save(
            {"params": data_parallel, "loss": loss, "merged": merged, "replicated": replicated},
            f"{out}.{rank}",
        )
        dist.barrier()  # no rank tears the group down while another still talks to it
    except BaseException:
        dist.destroy_process_group()
        raise
    leave()


@pytest.fixture(scope="module")
def unit_results(tmp_path_factory) -> list[dict]:
    directory = tmp_path_factory.mktemp("unit")
    out = str(directory / "rank")
    spawn(unit_worker, 2, directory, out)
    return [torch.load(f"{out}.{rank}", weights_only=False) for rank in range(2)]


def test_minibatch_shares_weigh_each_rank_by_its_part_of_the_minibatch() -> None:
    shares = minibatch_shares([37, 45], 8)
    assert shares.shape == (6, 2)
    torch.testing.assert_close(shares[0], torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(shares[4], torch.tensor([5 / 13, 8 / 13], dtype=torch.float64))
    torch.testing.assert_close(shares[5], torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(shares.sum(1), torch.ones(6, dtype=torch.float64))


def test_data_parallel_value_fit_equals_the_single_process_fit_on_the_union(
    unit_results,
) -> None:
    """Minibatch j of the job is the union of the ranks' parts j, each rank shuffling its
    own shard with its own generator: replay that arrangement in one process."""
    value, observations, returns = value_problem()
    optimizer = torch.optim.Adam(value.parameters(), lr=1e-2)
    shards = [
        (observations[sum(SHARDS[:r]) : sum(SHARDS[: r + 1])],
         returns[sum(SHARDS[:r]) : sum(SHARDS[: r + 1])])
        for r in range(2)
    ]  # fmt: skip
    generators = [torch.Generator().manual_seed(10 + rank) for rank in range(2)]
    num_minibatches = math.ceil(max(SHARDS) / MINIBATCH)
    for _ in range(EPOCHS):
        losses = []
        orders = [torch.randperm(n, generator=g) for n, g in zip(SHARDS, generators, strict=True)]
        for j in range(num_minibatches):
            parts = [order[j * MINIBATCH : (j + 1) * MINIBATCH] for order in orders]
            x = torch.cat([shard[0][part] for shard, part in zip(shards, parts, strict=True)])
            y = torch.cat([shard[1][part] for shard, part in zip(shards, parts, strict=True)])
            loss = (value(x) - y).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    for result in unit_results:
        for got, want in zip(result["params"], value.parameters(), strict=True):
            torch.testing.assert_close(got, want.detach(), rtol=1e-6, atol=1e-6)
        assert result["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_replicated_value_fit_is_the_single_process_fit_on_the_gathered_batch(
    unit_results, dtype
) -> None:
    """Every rank fits on both shards, in rank order, with minibatches of 2 · MINIBATCH
    and the same generator: the single-process fit of that batch, exactly."""
    value, observations, returns = value_problem()
    value, observations, returns = value.to(dtype), observations.to(dtype), returns.to(dtype)
    optimizer = torch.optim.Adam(value.parameters(), lr=1e-2)
    loss = rl.value.fit_value(value, optimizer, observations, returns, EPOCHS, 2 * MINIBATCH,
                              torch.Generator().manual_seed(10))  # fmt: skip
    for result in unit_results:
        params, got_loss = result["replicated"][str(dtype)]
        for got, want in zip(params, value.parameters(), strict=True):
            assert torch.equal(got, want.detach())
        assert got_loss == loss


@pytest.mark.parametrize("shape", [(3,), ()])
def test_merged_normalization_statistics_are_those_of_all_ranks_samples(
    unit_results, shape
) -> None:
    common, rank_batches = statistics_data()
    pick = (lambda x: x) if shape else (lambda x: x[:, 0])
    single = RunningMeanStd(shape=shape)
    single.update(pick(common))
    for batches in rank_batches:
        for batch in batches:
            single.update(pick(batch))
    for result in unit_results:
        mean, var, count = result["merged"][str(shape)]
        assert count == pytest.approx(single.count, rel=1e-12)
        torch.testing.assert_close(torch.as_tensor(mean), torch.as_tensor(single.mean))
        torch.testing.assert_close(torch.as_tensor(var), torch.as_tensor(single.var))


# ----------------------------------------------------------------- training runs
def training_worker(rank: int, world_size: int, store: str, runs: list[list[str]]) -> None:
    from rl.train import main

    join_group(rank, world_size, store)
    try:
        for arguments in runs:
            assert main(arguments) == 0, arguments
        dist.barrier()
    except BaseException:
        dist.destroy_process_group()
        raise
    leave()


@pytest.fixture(scope="module")
def two_rank_runs(tmp_path_factory) -> Path:
    """Run ``a`` for 4 iterations; run ``b`` for 2, then resumed to 4."""
    base = tmp_path_factory.mktemp("runs")
    job_steps = 2 * PER_RANK_STEPS
    runs = [
        [*TRAIN_ARGS, "--total-steps", str(4 * job_steps), "--run-dir", str(base / "a")],
        [*TRAIN_ARGS, "--total-steps", str(2 * job_steps), "--run-dir", str(base / "b")],
        ["--resume", str(base / "b"), "--total-steps", str(4 * job_steps), "--quiet"],
        # rank 0 alone evaluates: the ranks once took different paths here and hung
        [*EVALUATING, "--total-steps", str(4 * job_steps), "--run-dir", str(base / "c")],
        [*EVALUATING, "--total-steps", str(2 * job_steps), "--run-dir", str(base / "d")],
        ["--resume", str(base / "d"), "--total-steps", str(4 * job_steps), "--quiet"],
    ]
    spawn(training_worker, 2, base, runs)
    return base


def test_two_ranks_write_one_metrics_row_per_iteration_for_the_whole_job(two_rank_runs) -> None:
    run_rows = rows(two_rank_runs / "a")
    assert [row["iteration"] for row in run_rows] == [1, 2, 3, 4]
    assert [row["step"] for row in run_rows] == [2 * PER_RANK_STEPS * k for k in (1, 2, 3, 4)]
    assert all(PER_RANK_STEPS < row["samples"] <= 2 * PER_RANK_STEPS for row in run_rows)
    files = {path.name for path in (two_rank_runs / "a").iterdir()}
    assert files <= {"config.yaml", "metrics.jsonl", "evals.jsonl", "model.pt", "checkpoint.pt",
                     "checkpoint.prev.pt"}  # fmt: skip
    checkpoint = read_checkpoint(two_rank_runs / "a" / "checkpoint.pt")
    assert checkpoint["world_size"] == 2 and len(checkpoint["rank_states"]) == 1


def test_first_iteration_is_each_rank_collecting_with_its_own_seeds(two_rank_runs) -> None:
    """Rank r collects what one process collects with the same networks and the env and
    action seeds ``rank_seed(seed, r)``: the job's first row adds up the two."""
    singles = []
    for rank in range(2):
        config = rl.TRPOConfig.from_preset(
            "CartPole-v1", seed=4, steps_per_iteration=PER_RANK_STEPS, total_steps=1
        )
        agent = rl.TRPO(config)
        agent.env_seed = rank_seed(4, rank)
        agent.action_generator.manual_seed(rank_seed(4, rank))
        agent.learn(progress="none", callback=lambda _, row: singles.append(row) and None)
    first = rows(two_rank_runs / "a")[0]
    assert first["samples"] == sum(row["samples"] for row in singles)
    assert first["episodes"] == sum(row["episodes"] for row in singles)
    returns = sum(row["episode_return_mean"] * row["episodes"] for row in singles)
    assert first["episode_return_mean"] == pytest.approx(returns / first["episodes"])


def test_two_rank_run_resumed_from_its_checkpoint_writes_the_uninterrupted_rows(
    two_rank_runs,
) -> None:
    assert rows(two_rank_runs / "b") == rows(two_rank_runs / "a")


def test_two_ranks_evaluating_and_checkpointing_take_each_iteration_once(two_rank_runs) -> None:
    """eval_every and checkpoint_every with 2 ranks (Pendulum, normalization on): every rank
    goes through each iteration once, rank 0 evaluates at each boundary, and a run resumed
    from its checkpoint writes the uninterrupted rows."""
    run_rows = rows(two_rank_runs / "c")
    assert [row["iteration"] for row in run_rows] == [1, 2, 3, 4]
    evals = (two_rank_runs / "c" / "evals.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in evals] == [512, 1024, 1536, 2048]
    assert rows(two_rank_runs / "d") == run_rows


def test_one_process_refuses_to_resume_a_two_rank_checkpoint(two_rank_runs) -> None:
    with pytest.raises(CheckpointError, match=r"torchrun --nproc-per-node 2 -m rl\.train"):
        rl.TRPO.resume(two_rank_runs / "a", total_steps=10**6)


def test_a_job_of_one_rank_is_the_single_process_bit_for_bit(tmp_path: Path) -> None:
    arguments = [
        "Pendulum-v1", "--seed", "3", "--total-steps", "2048", "--set",
        "steps_per_iteration=512", "--set", "normalize_observations=true", "--set",
        "normalize_rewards=true", "--quiet",
    ]  # fmt: skip
    spawn(training_worker, 1, tmp_path, [[*arguments, "--run-dir", str(tmp_path / "job")]])
    assert trpo_main(["train", *arguments, "--run-dir", str(tmp_path / "single")]) == 0
    assert rows(tmp_path / "job") == rows(tmp_path / "single")
    assert len(rows(tmp_path / "job")) == 4


def test_auto_value_fit_follows_the_device_not_the_backend_name() -> None:
    """On a CUDA machine the backend is "cpu:gloo,cuda:nccl" whatever the device: CPU
    training there must still replicate (gloo), GPU training all-reduce (NCCL)."""
    from rl.comm import value_fit_mode

    assert value_fit_mode("auto", torch.device("cpu"), 2) == "replicate"
    assert value_fit_mode("auto", torch.device("cuda", 0), 2) == "all_reduce"
    assert value_fit_mode("all_reduce", torch.device("cpu"), 4) == "all_reduce"
    assert value_fit_mode("replicate", torch.device("cpu"), 1) == "local"
