"""Data-parallel TRPO on ``torch.distributed``: one rank of a job started by torchrun.

``torchrun --nproc-per-node K -m rl.train ARGS`` (see ``rl.train``) runs K ranks. Each
rank steps its own ``num_envs`` training envs for ``steps_per_iteration`` steps per
iteration, so an iteration of the job learns from K times the config's batch, and
``total_steps`` counts the env steps of all ranks together. Every rank holds identical
networks and takes the identical update; only rank 0 writes the run directory.

One iteration of rank r of K::

    rollout      its own envs; sub-env i first reset with seed rank_seed(seed, r) + i
    advantages   standardised over the job's batch: 1 all-reduce (counts ride along)
    policy       TrustRegionOptimizer(process_group): weights and loss (1 all-reduce), the
                 gradient, one Fisher product per CG iteration and the line search's
                 loss/KL, averaged weighted by samples
    value        minibatch Adam on a group of its own, by ``value.distributed_fit``:
                 'replicate' (default on CPU): the job's batch gathered once (1
                 all-gather) and every rank takes the same steps on all of it, in the
                 value-fit process beside the policy step and the next rollout;
                 'all_reduce' (default on GPU): each minibatch's gradient averaged over
                 the ranks weighted by samples, 1 all-reduce per minibatch (the fit runs in
                 the training thread, before the policy step)
    end          samples, entropy, explained variance, episode sums, SIGINT/SIGTERM agreed
                 by all ranks and the NormalizeObservation/NormalizeReward moments merged:
                 1 all-reduce (``DistributedComm.end_iteration``)
    files        rank 0: metrics.jsonl (one row per iteration, for the job), evaluations,
                 model.pt; checkpoints gather every rank's env and RNG state to rank 0

Seeds: rank r uses ``rank_seed(seed, r) = seed + 10_000·r`` for its envs and its action
generator (and, for the all-reduce value fit, + 1 for its shuffling; the replicated fit
shuffles with rank 0's ``seed + 1`` everywhere); rank 0's are those of a single process,
and the networks start from ``seed`` on every rank (and are broadcast from rank 0). The
all-reduce value fit's minibatch size is per rank: every rank splits its own samples into
minibatches of ``value.minibatch_size`` and all ranks take ``ceil(max_r M_r /
minibatch_size)`` Adam steps per epoch (``M_r``: rank r's valid samples; a rank whose
samples run out first adds an empty part); the replicated fit's minibatches hold K times
``value.minibatch_size`` of the gathered samples. A job of one rank is the single
process, bit for bit.

Example (every rank, after ``torch.distributed.init_process_group``)::

    agent = TRPO(TRPOConfig.from_preset("HalfCheetah-v5"), comm=DistributedComm())
    agent.learn()
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor, nn

from rl.comm import (
    RANK_SEED_STRIDE,
    DistributedComm,
    RunningMoments,
    merge_running_moments,
    rank_seed,
)
from rl.value import Snapshot, apply_gradients, minibatch_gradients

__all__ = [
    "RANK_SEED_STRIDE",
    "DistributedComm",
    "RunningMoments",
    "default_backend",
    "fit_value_data_parallel",
    "init_process_group_from_env",
    "merge_running_moments",
    "minibatch_shares",
    "rank_seed",
]

TIMEOUT = timedelta(minutes=30)  # rank 0 may evaluate or checkpoint while the others wait
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def default_backend() -> str:
    """``"cpu:gloo,cuda:nccl"`` where CUDA and NCCL are available (CPU tensors and object
    collectives go through gloo, CUDA tensors through NCCL), else ``"gloo"``."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def launched_by_torchrun() -> bool:
    """True when torchrun's environment variables (RANK, WORLD_SIZE, ...) are set."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def init_process_group_from_env(timeout: timedelta = TIMEOUT) -> bool:
    """``init_process_group`` from torchrun's environment variables with
    ``default_backend()``; on CUDA each process first takes GPU ``LOCAL_RANK``.

    In a job torchrun has restarted (``TORCHELASTIC_RESTART_COUNT`` > 0) on the store its
    agent shares with the workers, the group's keys are put under ``rl/attempt_N/``: that
    store outlives the attempts, and gloo would otherwise read the addresses the dead
    workers of an earlier attempt wrote there (and fail with "Connection refused").

    Returns:
        bool: True if it initialised the group (the caller then destroys it), False if
        one was already initialised.
    """
    if dist.is_initialized():
        return False
    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0)
    if attempt > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        world_size = int(os.environ["WORLD_SIZE"])
        agent_store = dist.TCPStore(
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
            is_master=False, timeout=timeout,
        )  # fmt: skip
        store = dist.PrefixStore(f"rl/attempt_{attempt}/", agent_store)
        dist.init_process_group(
            backend=default_backend(), store=store, rank=int(os.environ["RANK"]),
            world_size=world_size, timeout=timeout,
        )  # fmt: skip
        return True
    dist.init_process_group(backend=default_backend(), timeout=timeout)
    return True


def minibatch_shares(sample_counts: Sequence[int], minibatch_size: int) -> Tensor:
    """``(J, K)`` weight of each rank's part in each of the job's ``J`` minibatches.

    Rank r's minibatch j holds ``n_rj = clamp(M_r − j·minibatch_size, 0, minibatch_size)``
    of its ``M_r`` samples; ``J = ceil(max_r M_r / minibatch_size)``; the weights are
    ``n_rj / Σ_r n_rj``, so that the weighted mean of the ranks' mean losses is the mean
    loss over the union of the parts.

    Example:
        >>> minibatch_shares([5, 3], 2)
        tensor([[0.5000, 0.5000],
                [0.6667, 0.3333],
                [1.0000, 0.0000]], dtype=torch.float64)
    """
    counts = torch.tensor(list(sample_counts), dtype=torch.float64)
    num_minibatches = math.ceil(int(counts.max()) / minibatch_size) if len(counts) else 0
    starts = torch.arange(num_minibatches, dtype=torch.float64)[:, None] * minibatch_size
    sizes = (counts[None, :] - starts).clamp(0, minibatch_size)
    return sizes / sizes.sum(dim=1, keepdim=True)


def fit_value_data_parallel(
    value: nn.Module,
    optimizer: torch.optim.Optimizer,
    observations: Tensor,
    returns: Tensor,
    epochs: int,
    minibatch_size: int,
    generator: torch.Generator | None,
    group: dist.ProcessGroup,
) -> float:
    """``rl.value.fit_value`` with the data split over the ranks of ``group``.

    Each epoch every rank shuffles its own ``(M_r,)`` samples and cuts them into parts of
    ``minibatch_size``; part j of every rank forms the job's minibatch j, whose gradient is
    the ranks' gradients weighted by ``minibatch_shares`` (one all-reduce per minibatch,
    the loss riding along). Every rank then takes the same optimizer step. On one rank this
    is ``fit_value`` exactly. A fit that leaves a parameter non-finite is undone (on every
    rank alike, since their parameters are equal).

    Returns:
        float: the job's mean minibatch loss of the last epoch; NaN if the fit was undone.
    """
    num_samples, device = returns.shape[0], returns.device
    counts = [
        torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size(group))
    ]
    dist.all_gather(counts, torch.tensor([num_samples], device=device), group=group)
    shares = minibatch_shares([int(c) for c in counts], minibatch_size)
    own_shares = shares[:, dist.get_rank(group)].tolist()
    parameters = [p for p in value.parameters() if p.requires_grad]
    undo = Snapshot(value, optimizer)
    losses: list[Tensor] = []
    for _ in range(epochs):
        losses = []
        order = torch.randperm(num_samples, generator=generator).to(device)
        for j, share in enumerate(own_shares):
            index = order[j * minibatch_size : (j + 1) * minibatch_size]
            if index.numel():
                gradients, loss = minibatch_gradients(
                    value, parameters, observations[index], returns[index]
                )
                parts = [
                    torch.zeros_like(p) if g is None else g
                    for g, p in zip(gradients, parameters, strict=True)
                ]
                flat = torch.cat([*(g.reshape(-1) for g in parts), loss.reshape(1)])
            else:  # this rank's samples ran out before the others'
                flat = torch.zeros(
                    sum(p.numel() for p in parameters) + 1, dtype=parameters[0].dtype, device=device
                )
            flat.mul_(share)
            dist.all_reduce(flat, group=group)
            views, offset = [], 0
            for parameter in parameters:
                views.append(flat[offset : offset + parameter.numel()].view_as(parameter))
                offset += parameter.numel()
            apply_gradients(optimizer, parameters, views)
            losses.append(flat[-1].clone())
    return undo.finish(losses)
