"""Data-parallel TRPO on ``torch.distributed``: one rank of a job started by torchrun
(``torchrun --nproc-per-node K -m rl.train ARGS``). Each rank steps its own envs, all take
the identical update, rank 0 writes the run directory; what a job does, seeds and sends per
iteration: docs/distributed.md. A job of one rank is the single process, bit for bit.
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

__all__ = ["RANK_SEED_STRIDE", "DistributedComm", "RunningMoments", "default_backend",
           "fit_value_data_parallel", "init_process_group_from_env", "merge_running_moments",
           "minibatch_shares", "rank_seed"]  # fmt: skip

TIMEOUT = timedelta(minutes=30)  # rank 0 may evaluate or checkpoint while the others wait
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def default_backend() -> str:
    """``"cpu:gloo,cuda:nccl"`` where CUDA and NCCL are available, else ``"gloo"``."""
    return (
        "cpu:gloo,cuda:nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    )


def launched_by_torchrun() -> bool:
    """True when torchrun's environment variables (RANK, WORLD_SIZE, ...) are set."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def init_process_group_from_env(timeout: timedelta = TIMEOUT) -> bool:
    """``init_process_group`` from torchrun's environment (``default_backend()``; on CUDA
    GPU ``LOCAL_RANK`` first); False if a group exists already. In a restarted job the keys
    go under ``rl/attempt_N/`` of the agent's store, which outlives the attempts (gloo would
    read the dead workers' addresses: "Connection refused")."""
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
    """``(J, K)`` weight ``n_rj / Σ_r n_rj`` of rank r's part in minibatch j (``n_rj =
    clamp(M_r − j·minibatch_size, 0, minibatch_size)``, ``J = ceil(max_r M_r / size)``): the
    weighted mean of the ranks' mean losses is the mean loss over the union.

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
    """``rl.value.fit_value`` with the data split over ``group``: each rank's shuffled parts
    of ``minibatch_size``, part j of every rank forming minibatch j, gradients weighted by
    ``minibatch_shares`` (one all-reduce per step, the loss riding along). ``fit_value``
    exactly on one rank; a non-finite fit undone on every rank alike."""
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
