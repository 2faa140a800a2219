"""What the ranks of a training job tell each other, as an object the loop is given.

``rl.loop`` calls the same methods in the same order on every rank, so every rank issues
the same collectives by construction; only writing (files, display) and evaluating depend
on ``is_main``. ``Comm`` is one process (every operation is the local computation);
``DistributedComm`` is a rank of a ``torch.distributed`` job (see ``rl.distributed`` for
what each iteration communicates).
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from rl.envs import VectorEnvs
from rl.value import explained_variance
from trust_region.distributed import (
    broadcast_parameters,
    check_parameters_in_sync,
    gather_by_sum,
)

__all__ = [
    "RANK_SEED_STRIDE",
    "Comm",
    "DistributedComm",
    "RunningMoments",
    "gather_rows",
    "merge_running_moments",
    "rank_device",
    "rank_seed",
    "value_fit_mode",
]

RANK_SEED_STRIDE = 10_000  # > the 1,024 envs a rank may have: no two sub-envs share a seed
SYNC_CHECK_EVERY = 10  # iterations between checksums of the value parameters across ranks


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s envs and action sampling; rank 0's is ``seed`` itself."""
    return seed + RANK_SEED_STRIDE * rank


@dataclass(frozen=True)
class RunningMoments:
    """A snapshot of a gymnasium ``RunningMeanStd``: ``mean``, population ``var``, ``count``."""

    mean: np.ndarray
    var: np.ndarray
    count: float

    @classmethod
    def of(cls, statistics: Any) -> RunningMoments:
        return cls(np.array(statistics.mean), np.array(statistics.var), float(statistics.count))


class Comm:
    """A job of one process: nothing is sent, every result is this process's own."""

    rank = 0
    world_size = 1
    group: dist.ProcessGroup | None = None  # for TrustRegionOptimizer(process_group=...)

    @property
    def is_main(self) -> bool:
        """Whether this rank writes the run directory, shows progress and evaluates."""
        return self.rank == 0

    def broadcast(self, value: Any) -> Any:
        """The main rank's ``value`` on every rank (an exception is raised on every rank)."""
        if isinstance(value, BaseException):
            raise value
        return value

    def gather_to_main(self, value: Any) -> list[Any] | None:
        """Every rank's ``value`` in rank order on the main rank, None elsewhere."""
        return [value]

    def scatter(self, values: list[Any] | None) -> Any:
        """Rank r's item of the main rank's ``values`` (one per rank), on rank r."""
        assert values is not None
        return values[0]

    def agree_to_stop(self, signal_name: str | None) -> str | None:
        """The stop signal of any rank (the highest-numbered one: SIGTERM before SIGINT)."""
        return signal_name

    def start_statistics(self, envs: VectorEnvs) -> None:
        """Note the envs' normalization statistics before a rollout: ``end_iteration``
        gives every rank the moments of the job's samples (``merge_running_moments``)."""

    def standardize(self, advantages: Tensor) -> Tensor:
        """Standardise the ``(M,)`` advantages over the job's batch (as they are if M <= 1)."""
        if advantages.numel() <= 1:
            return advantages
        return (advantages - advantages.mean()) / (advantages.std() + 1e-8)

    def episode_metrics(
        self, finished: int, returns: Sequence[float], lengths: Sequence[float]
    ) -> dict[str, Any]:
        """Episodes finished this iteration by the job, and the mean return and length of
        each rank's last ``episode_window`` episodes together."""
        return {
            "episodes": finished,
            "episode_return_mean": float(np.mean(returns)) if returns else None,
            "episode_length_mean": float(np.mean(lengths)) if lengths else None,
        }

    def end_iteration(
        self,
        batch: tuple[Tensor, Tensor, Tensor],
        episodes: tuple[int, Sequence[float], Sequence[float]],
        signal_name: str | None,
    ) -> tuple[dict[str, Any], str | None]:
        """The row's ``samples``, mean ``entropy`` and ``explained_variance`` of the job's
        ``batch`` (``(M,)`` entropies before the step, values used by GAE, returns),
        ``episode_metrics`` of ``episodes`` (finished, returns, lengths) and the stop signal
        agreed (``agree_to_stop``); in a job, the normalization moments merged too."""
        entropies, values, returns = batch
        row = {
            "samples": int(returns.numel()),
            "entropy": float(entropies.mean()),
            "explained_variance": explained_variance(values, returns),
        }
        return row | self.episode_metrics(*episodes), self.agree_to_stop(signal_name)

    def place(self, device: torch.device) -> torch.device:
        """The device this process trains on for the config's ``device``: a bare ``cuda``
        is the current GPU."""
        if device.type == "cuda" and device.index is None and torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return device

    def setup(self, distributed_fit: str, device: torch.device) -> None:
        """The agent's settings: ``value.distributed_fit`` and the device it trains on."""

    @property
    def value_fit(self) -> str:
        """How the job fits the value function: ``"local"`` (one process), ``"replicate"``
        (every rank on the gathered batch) or ``"all_reduce"`` (gradients averaged)."""
        return "local"

    def value_batch(self, observations: Tensor, returns: Tensor) -> tuple[Tensor, Tensor, int]:
        """The batch the value fit sees and the factor of its minibatch size."""
        return observations, returns, 1

    def check_value_in_sync(self, value: nn.Module, iteration: int) -> None:
        """Compare the value parameters of the ranks (every ``SYNC_CHECK_EVERY``)."""


class DistributedComm(Comm):
    """One rank of a ``torch.distributed`` job (the default group unless ``group``).

    Collectives of the value fit go through a group of their own (``value_group``), made
    here: every process of the default group must build one.
    """

    def __init__(self, group: dist.ProcessGroup | None = None) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "distributed training needs torch.distributed initialised: start the job "
                "with torchrun (torchrun --nproc-per-node K -m rl.train ARGS) or call "
                "rl.distributed.init_process_group_from_env() first"
            )
        self.group = group if group is not None else dist.group.WORLD
        self.rank = dist.get_rank(self.group)
        self.world_size = dist.get_world_size(self.group)
        self.value_group = dist.new_group(ranks=dist.get_process_group_ranks(self.group))
        self._value_fit = value_fit_mode("auto", torch.device("cpu"), self.world_size)
        self.device: Any = "cpu"  # of the scalar collectives: set to the agent's device
        self._sizes: list[int] | None = None  # every rank's batch size, from ``standardize``
        self._started: list[tuple[Any, RunningMoments]] = []  # by ``start_statistics``

    def place(self, device: torch.device) -> torch.device:
        """``rank_device`` of this rank (``LOCAL_RANK``), made the current GPU."""
        device = rank_device(device, int(os.environ.get("LOCAL_RANK", self.rank)))
        if device.type == "cuda" and device.index < torch.cuda.device_count():
            torch.cuda.set_device(device)  # (NCCL's current device; else the check raises)
        return device

    def setup(self, distributed_fit: str, device: torch.device) -> None:
        self.device = device
        self._value_fit = value_fit_mode(distributed_fit, device, self.world_size)

    def broadcast(self, value: Any) -> Any:
        box = [value]
        dist.broadcast_object_list(box, src=dist.get_global_rank(self.group, 0), group=self.group)
        return super().broadcast(box[0])

    def broadcast_parameters(self, module: nn.Module) -> None:
        broadcast_parameters(list(module.parameters()), self.group)

    def gather_to_main(self, value: Any) -> list[Any] | None:
        gathered: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(
            value, gathered, dst=dist.get_global_rank(self.group, 0), group=self.group
        )
        return gathered

    def scatter(self, values: list[Any] | None) -> Any:
        box: list[Any] = [None]
        source = dist.get_global_rank(self.group, 0)
        dist.scatter_object_list(
            box, values if self.is_main else None, src=source, group=self.group
        )
        return box[0]

    def sum(self, values: Sequence[float | Tensor]) -> list[float]:
        """Float64 sums over the ranks of a few scalars, in one all-reduce."""
        numbers = [0.0 if isinstance(v, Tensor) else float(v) for v in values]
        where = [i for i, v in enumerate(values) if isinstance(v, Tensor)]
        if where:  # the 0-d tensors read in one transfer (one sync on a GPU), exact in float64
            read = torch.stack([values[i].reshape(()).double() for i in where]).cpu().tolist()
            for i, number in zip(where, read, strict=True):
                numbers[i] = number
        stacked = torch.tensor(numbers, dtype=torch.float64, device=self.device)
        dist.all_reduce(stacked, group=self.group)
        return stacked.cpu().tolist()

    def agree_to_stop(self, signal_name: str | None) -> str | None:
        number = signal.Signals[signal_name].value if signal_name else 0
        flag = torch.tensor([number], dtype=torch.int64, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return signal.Signals(int(flag)).name if int(flag) else None

    def start_statistics(self, envs: VectorEnvs) -> None:
        found = []
        if envs.obs_normalizer is not None and self.world_size > 1:  # (1 rank: as 1 process)
            found.append(envs.obs_normalizer.obs_rms)
        if envs.reward_normalizer is not None and self.world_size > 1:
            found.append(envs.reward_normalizer.return_rms)
        self._started = [(running, RunningMoments.of(running)) for running in found]

    def standardize(self, advantages: Tensor) -> Tensor:
        """As ``Comm.standardize``, in one all-reduce: every rank's count, sum and squared
        deviations from its own mean (slots of rank r), merged (Chan et al.); the counts
        are kept for ``value_batch``."""
        if self.world_size == 1:
            return super().standardize(advantages)
        local = advantages.double()
        deviations = (local - local.mean()).square().sum() if local.numel() else local.sum()
        row = torch.stack([local.new_tensor(float(local.numel())), local.sum(), deviations])
        table = gather_by_sum(row, self.group).cpu().tolist()
        self._sizes = [int(size) for size, _, _ in table]
        count = sum(self._sizes)
        if count <= 1:
            return advantages
        mean = sum(total for _, total, _ in table) / count
        squares = sum(m2 + n * (t / n - mean) ** 2 for n, t, m2 in table if n)
        return (advantages - mean) / (math.sqrt(squares / (count - 1)) + 1e-8)

    def end_iteration(
        self,
        batch: tuple[Tensor, Tensor, Tensor],
        episodes: tuple[int, Sequence[float], Sequence[float]],
        signal_name: str | None,
    ) -> tuple[dict[str, Any], str | None]:
        """One all-reduce: the batch's moments, each rank's signal and its recent episodes
        (slot r of rank r: rank r's ``window`` returns and lengths, exact in a sum of zeros
        elsewhere, so the job's mean is ``np.mean`` of the ranks' lists joined in order)."""
        if self.world_size == 1:
            return super().end_iteration(batch, episodes, signal_name)
        entropies, values, targets = batch
        residuals, targets = (targets - values).double(), targets.double()
        finished, returns, lengths = episodes
        K, window = self.world_size, max(len(returns), getattr(returns, "maxlen", 0) or 0)
        slots = [0.0] * (K * (2 + 2 * window))  # signal, episode count, returns, lengths
        slots[self.rank] = signal.Signals[signal_name].value if signal_name else 0
        slots[K + self.rank] = len(returns)
        start = 2 * K + self.rank * 2 * window
        slots[start : start + 2 * len(returns)] = [*returns, *lengths]
        moments = [_new_moments(running, reference) for running, reference in self._started]
        sums = self.sum(
            [
                targets.numel(), entropies.double().sum(), targets.sum(), targets.square().sum(),
                residuals.sum(), residuals.square().sum(), finished, *slots,
                *(value for piece in moments for value in piece.tolist()),
            ]
        )  # fmt: skip
        _merge_all(self._started, moments, sums[7 + len(slots) :])
        count, entropy_sum, *moments = sums[:6]
        episodes_done, signals, counts = sums[6], sums[7 : 7 + K], sums[7 + K : 7 + 2 * K]
        joined = [sums[7 + 2 * K + r * 2 * window :][: 2 * int(n)] for r, n in enumerate(counts)]
        returns = [value for part in joined for value in part[: len(part) // 2]]
        lengths = [value for part in joined for value in part[len(part) // 2 :]]
        target_variance = _unbiased_variance(count, moments[0], moments[1])
        residual_variance = _unbiased_variance(count, moments[2], moments[3])
        explained = (
            1.0 - residual_variance / target_variance if target_variance > 0 else float("nan")
        )
        row = {
            "samples": int(count),
            "entropy": entropy_sum / count if count else float("nan"),
            "explained_variance": explained,
        } | self.episode_metrics(int(episodes_done), returns, lengths)
        stop = int(max(signals))
        return row, signal.Signals(stop).name if stop else None

    @property
    def value_fit(self) -> str:
        return self._value_fit

    def value_batch(self, observations: Tensor, returns: Tensor) -> tuple[Tensor, Tensor, int]:
        if self._value_fit != "replicate":
            return observations, returns, 1
        sizes, self._sizes = self._sizes or _all_sizes(returns, self.value_group), None
        if observations.dtype != returns.dtype:
            return (
                gather_rows(observations, self.value_group, sizes),
                gather_rows(returns, self.value_group, sizes),
                self.world_size,
            )
        rows = torch.cat([observations.flatten(1), returns[:, None]], dim=1)
        both = gather_rows(rows, self.value_group, sizes)  # one all-gather for the two
        gathered = both[:, :-1].reshape(-1, *observations.shape[1:]).contiguous()
        return gathered, both[:, -1].contiguous(), self.world_size

    def check_value_in_sync(self, value: nn.Module, iteration: int) -> None:
        if iteration % SYNC_CHECK_EVERY == 1:
            check_parameters_in_sync(list(value.parameters()), self.value_group)


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """The device of the rank ``local_rank`` (on its node) of a job configured with
    ``device``: ``cuda`` is ``cuda:LOCAL_RANK`` and ``cuda:N`` is ``cuda:N+LOCAL_RANK`` (a
    job's GPUs on each node start at N: two jobs of 4 ranks share an 8-GPU node with
    ``cuda:0`` and ``cuda:4``); any other device is every rank's.

    Example:
        >>> rank_device(torch.device("cuda:4"), 1)
        device(type='cuda', index=5)
    """
    if device.type != "cuda":
        return device
    return torch.device("cuda", (device.index or 0) + local_rank)


def value_fit_mode(distributed_fit: str, device: torch.device, world_size: int) -> str:
    """``value.distributed_fit`` for a job of ``world_size`` ranks training on ``device``:
    'auto' replicates when the value network is on the CPU (gloo: one all-reduce costs
    about a millisecond, the fit takes hundreds of steps) and all-reduces per minibatch on
    a GPU (NCCL). The backend name says nothing here: it is "cpu:gloo,cuda:nccl" on any
    CUDA machine, CPU training included. One rank fits alone ("local")."""
    if world_size == 1:
        return "local"
    if distributed_fit == "auto":
        return "replicate" if device.type == "cpu" else "all_reduce"
    return distributed_fit


def _unbiased_variance(count: float, total: float, squares: float) -> float:
    if count <= 1:
        return float("nan")
    return (squares - total * total / count) / (count - 1)


def merge_running_moments(
    statistics: Any, reference: RunningMoments, group: dist.ProcessGroup, device: Any = "cpu"
) -> None:
    """Give every rank the moments of the job's samples: ``reference``'s and all the samples
    that each rank has added to its ``statistics`` (a ``RunningMeanStd``) since, in one
    all-reduce (``DistributedComm.end_iteration`` packs this into its own; the algebra:
    docs/distributed.md, "Normalization statistics")."""
    piece = _new_moments(statistics, reference)
    packed = torch.from_numpy(piece).to(device)
    dist.all_reduce(packed, group=group)
    _merge_all([(statistics, reference)], [piece], packed.cpu().tolist())


def _merge_all(started: Sequence, pieces: list[np.ndarray], summed: list[float]) -> None:
    """Each ``(statistics, reference)`` of ``started`` set from its slice of ``summed``."""
    offset = 0
    for (statistics, reference), piece in zip(started, pieces, strict=True):
        _merge_moments(statistics, reference, np.array(summed[offset : offset + len(piece)]))
        offset += len(piece)


def _new_moments(statistics: Any, reference: RunningMoments) -> np.ndarray:
    """This rank's ``[n_r, d_r, e_r]`` (see ``merge_running_moments``), flat."""
    mean, var, count = reference.mean, reference.var, reference.count
    shift = np.asarray(statistics.mean, dtype=np.float64) - mean
    local_count = float(statistics.count)
    deviations = local_count * shift
    squares = local_count * (np.asarray(statistics.var, dtype=np.float64) + shift**2)
    squares = squares - count * var
    return np.concatenate([[local_count - count], np.ravel(deviations), np.ravel(squares)])


def _merge_moments(statistics: Any, reference: RunningMoments, total: np.ndarray) -> None:
    """Set ``statistics`` to the job's moments from the summed ``[n, d, e]`` of all ranks."""
    mean, var, count = reference.mean, reference.var, reference.count
    size = int(np.size(mean))
    job_count = count + total[0]
    job_shift = total[1 : 1 + size].reshape(np.shape(mean)) / job_count
    job_var = (count * var + total[1 + size :].reshape(np.shape(mean))) / job_count - job_shift**2
    statistics.mean = (mean + job_shift).astype(np.asarray(statistics.mean).dtype)
    statistics.var = np.maximum(job_var, 0.0).astype(np.asarray(statistics.var).dtype)
    statistics.count = job_count


def _all_sizes(rows: Tensor, group: dist.ProcessGroup) -> list[int]:
    """The number of rows of every rank (one all-gather)."""
    device, world_size = rows.device, dist.get_world_size(group)
    counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world_size)]
    dist.all_gather(counts, torch.tensor([rows.shape[0]], device=device), group=group)
    return [int(count) for count in counts]


def gather_rows(rows: Tensor, group: dist.ProcessGroup, sizes: list[int] | None = None) -> Tensor:
    """Every rank's ``rows`` (``sizes[r]`` on rank r; gathered first if not given),
    concatenated in rank order (padded to the largest for the collective; dtype and
    trailing shape kept)."""
    sizes = _all_sizes(rows, group) if sizes is None else sizes
    padded = rows.new_zeros((max(sizes), *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded, group=group)
    return torch.cat([part[:size] for part, size in zip(gathered, sizes, strict=True)])
