"""Data-parallel TRPO on ``torch.distributed``: one rank of a job started by torchrun.

``torchrun --nproc-per-node K -m rl.train ARGS`` (see ``rl.train``) runs K ranks. Each
rank steps its own ``num_envs`` training envs for ``steps_per_iteration`` steps per
iteration, so an iteration of the job learns from K times the config's batch, and
``total_steps`` counts the env steps of all ranks together. Every rank holds identical
networks and takes the identical update; only rank 0 writes the run directory.

One iteration of rank r of K::

    rollout      its own envs; sub-env i first reset with seed rank_seed(seed, r) + i
    statistics   NormalizeObservation/NormalizeReward moments merged: 1 all-reduce each
    advantages   standardised over the job's batch: 2 scalar all-reduces
    policy       TrustRegionOptimizer(process_group): the gradient, one Fisher product per
                 CG iteration and the line search's loss/KL, averaged weighted by samples
    value        minibatch Adam on a group of its own, by ``value.distributed_fit``:
                 'replicate' (default on gloo): the job's batch gathered once (3
                 collectives) and every rank takes the same steps on all of it, as one
                 TorchScript call beside the policy step and the next rollout;
                 'all_reduce' (default on NCCL): each minibatch's gradient averaged over
                 the ranks weighted by samples, 1 all-reduce per minibatch (the fit runs in
                 a background thread beside the policy step)
    metrics      samples, entropy, explained variance: 1 all-reduce; episodes: 1 all-gather
    stop         SIGINT/SIGTERM agreed by all ranks: 1 all-reduce
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

    agent = DistributedTRPO(TRPOConfig.from_preset("HalfCheetah-v5"))
    agent.learn()
"""

from __future__ import annotations

import copy
import math
import os
import signal
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from rl.checkpoint import (
    CHECKPOINT_FILE,
    Checkpointer,
    CheckpointWarning,
    StopOnSignals,
    _agent_generators,
    build_checkpoint,
    capture_env_state,
    capture_rng_states,
    check_world_size,
    load_run,
    restore_agent,
    write_checkpoint,
)
from rl.config import TRPOConfig
from rl.envs import EnvFactory, VectorEnvs
from rl.errors import CheckpointWriteError
from rl.progress import Progress, ProgressMode
from rl.rollout import Rollout, RolloutCollector
from rl.run_files import RunFiles
from rl.trpo import TRPO, _Clock
from rl.value import MinibatchStepper, finish_fit, fit_value
from trust_region.distributed import broadcast_parameters, check_parameters_in_sync

__all__ = [
    "RANK_SEED_STRIDE",
    "DistributedTRPO",
    "RunningMoments",
    "default_backend",
    "fit_value_data_parallel",
    "fit_value_replicated",
    "init_process_group_from_env",
    "merge_running_moments",
    "minibatch_shares",
    "rank_seed",
]

RANK_SEED_STRIDE = 10_000  # > the 1,024 envs a rank may have: no two sub-envs share a seed
SYNC_CHECK_EVERY = 10  # iterations (policy steps) between parameter checksums across ranks
TIMEOUT = timedelta(minutes=30)  # rank 0 may evaluate or checkpoint while the others wait
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s envs and action sampling; rank 0's is ``seed`` itself."""
    return seed + RANK_SEED_STRIDE * rank


# ------------------------------------------------------------------------- process group
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

    Returns:
        bool: True if it initialised the group (the caller then destroys it), False if
        one was already initialised.
    """
    if dist.is_initialized():
        return False
    if torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend=default_backend(), timeout=timeout)
    return True


def _broadcast_object(value: Any, group: dist.ProcessGroup) -> Any:
    """Rank 0's ``value`` on every rank of ``group`` (pickled: peers of one job only)."""
    box = [value]
    dist.broadcast_object_list(box, src=dist.get_global_rank(group, 0), group=group)
    return box[0]


def _all_gather_objects(value: Any, group: dist.ProcessGroup) -> list[Any]:
    gathered: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, value, group=group)
    return gathered


def _all_sum(values: Sequence[float | Tensor], group: dist.ProcessGroup, device: Any) -> Tensor:
    """Float64 sums over the ranks of a few scalars, in one all-reduce."""
    stacked = torch.stack(
        [torch.as_tensor(v, dtype=torch.float64).reshape(()).to(device) for v in values]
    )
    dist.all_reduce(stacked, group=group)
    return stacked.cpu()


# ------------------------------------------------------------------------- statistics
@dataclass(frozen=True)
class RunningMoments:
    """A snapshot of a gymnasium ``RunningMeanStd``: ``mean``, population ``var``, ``count``."""

    mean: np.ndarray
    var: np.ndarray
    count: float

    @classmethod
    def of(cls, statistics: Any) -> RunningMoments:
        return cls(np.array(statistics.mean), np.array(statistics.var), float(statistics.count))


def merge_running_moments(
    statistics: Any, reference: RunningMoments, group: dist.ProcessGroup, device: Any = "cpu"
) -> None:
    """Give every rank the moments of the job's samples: ``reference``'s and all the samples
    that each rank has added to its ``statistics`` (a ``RunningMeanStd``) since.

    Every rank's ``statistics`` holds ``reference`` merged with its own new samples (Chan et
    al.'s parallel update, as gymnasium's). Relative to the reference mean ``μ`` (count
    ``c``, variance ``σ²``), rank r's new samples count ``n_r = c_r − c``, their deviations
    sum to ``d_r = c_r (μ_r − μ)`` and their squared deviations to
    ``e_r = c_r (σ_r² + (μ_r − μ)²) − c σ²``. With ``C = c + Σ n_r``, ``D = Σ d_r`` and
    ``E = c σ² + Σ e_r`` the job's moments are ``μ + D/C`` and ``E/C − (D/C)²``; one
    all-reduce of ``[n_r, d_r, e_r]``, centred on ``μ`` so that large means lose no digits.
    """
    mean, var, count = reference.mean, reference.var, reference.count
    shift = np.asarray(statistics.mean, dtype=np.float64) - mean
    local_count = float(statistics.count)
    new_count = local_count - count
    deviations = local_count * shift
    squares = local_count * (np.asarray(statistics.var, dtype=np.float64) + shift**2)
    squares = squares - count * var
    size = int(np.size(mean))
    packed = torch.from_numpy(
        np.concatenate([[new_count], np.ravel(deviations), np.ravel(squares)])
    ).to(device)
    dist.all_reduce(packed, group=group)
    total = packed.cpu().numpy()
    job_count = count + total[0]
    job_shift = total[1 : 1 + size].reshape(np.shape(mean)) / job_count
    job_var = (count * var + total[1 + size :].reshape(np.shape(mean))) / job_count - job_shift**2
    statistics.mean = (mean + job_shift).astype(np.asarray(statistics.mean).dtype)
    statistics.var = np.maximum(job_var, 0.0).astype(np.asarray(statistics.var).dtype)
    statistics.count = job_count


def _running_statistics(envs: VectorEnvs) -> list[Any]:
    """The ``RunningMeanStd`` objects of the envs' normalization wrappers."""
    found = []
    if envs.obs_normalizer is not None:
        found.append(envs.obs_normalizer.obs_rms)
    if envs.reward_normalizer is not None:
        found.append(envs.reward_normalizer.return_rms)
    return found


# ------------------------------------------------------------------------- value fit
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
    the loss riding along). Every rank then takes the same Adam step. On one rank this is
    ``fit_value`` exactly. A fit that leaves a parameter non-finite is undone (on every
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
    stepper = MinibatchStepper(value, optimizer)
    size = sum(p.numel() for p in stepper.parameters)
    # The gradient (and the loss, riding along) in one flat buffer, weighted by this
    # rank's share of the job's minibatch, summed over the ranks.
    dtype = stepper.parameters[0].dtype if stepper.parameters else returns.dtype
    flat = torch.zeros(size + 1, dtype=dtype, device=device)
    flat_gradients = stepper.views(flat)
    saved_parameters = [p.detach().clone() for p in value.parameters()]
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    losses: list[Tensor] = []
    for epoch in range(epochs):
        losses = []
        want_loss = epoch == epochs - 1
        order = torch.randperm(num_samples, generator=generator).to(returns.device)
        for j, share in enumerate(own_shares):
            if j * minibatch_size < num_samples:
                index = order[j * minibatch_size : (j + 1) * minibatch_size]
                gradients, loss = stepper.gradients(
                    observations[index], returns[index], want_loss, out=flat
                )
                if loss is not None:
                    flat[-1] = loss
            else:  # this rank's samples ran out before the others'
                flat.zero_()
                gradients = flat_gradients
            flat.mul_(share)
            dist.all_reduce(flat, group=group)
            stepper.step(gradients)
            if want_loss:
                losses.append(flat[-1].clone())
    return finish_fit(value, optimizer, saved_parameters, saved_optimizer, losses)


def fit_value_replicated(
    value: nn.Module,
    optimizer: torch.optim.Optimizer,
    observations: Tensor,
    returns: Tensor,
    epochs: int,
    minibatch_size: int,
    generator: torch.Generator | None,
    group: dist.ProcessGroup,
) -> float:
    """``rl.value.fit_value`` on the job's whole batch, on every rank of ``group`` alike.

    The ranks' ``(M_r, obs_dim)`` observations and ``(M_r,)`` returns are gathered in rank
    order (three collectives: the counts, then the padded data); every rank then runs the
    same fit (``fit_value``, the scripted fast path where it applies) with minibatches of
    ``K · minibatch_size`` samples, ``K`` the ranks. ``generator`` must be in the same state
    on every rank; the parameters then stay equal with no further communication (the
    results are deterministic on CPU). The same algorithm as ``fit_value_data_parallel``
    with equal shares (job minibatches of ``K · minibatch_size``, about as many steps), one
    few collectives per fit instead of one per Adam step; every rank does the whole fit.

    Returns:
        float: the mean minibatch loss of the last epoch; NaN if the fit was undone.
    """
    device = returns.device
    world_size = dist.get_world_size(group)
    counts = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world_size)]
    dist.all_gather(counts, torch.tensor([returns.shape[0]], device=device), group=group)
    sizes = [int(count) for count in counts]
    union_observations = _all_gather_rows(observations, sizes, group)
    union_returns = _all_gather_rows(returns, sizes, group)
    return fit_value(
        value,
        optimizer,
        union_observations,
        union_returns,
        epochs,
        minibatch_size * world_size,
        generator,
    )


def _all_gather_rows(rows: Tensor, sizes: list[int], group: dist.ProcessGroup) -> Tensor:
    """Every rank's ``rows`` (``sizes[r]`` of them on rank r), concatenated in rank order
    (padded to the largest for the collective; dtype and trailing shape kept)."""
    padded = rows.new_zeros((max(sizes), *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded, group=group)
    return torch.cat([part[:size] for part, size in zip(gathered, sizes, strict=True)])


# ------------------------------------------------------------------------- the agent
class DistributedTRPO(TRPO):
    """One rank of a data-parallel TRPO job (see the module docstring for what each rank
    does and what is communicated).

    Every rank of ``process_group`` builds one, with the same arguments (rank 0's config is
    the job's: it is broadcast), and calls ``learn`` with the same arguments. Only rank 0
    shows progress, evaluates and writes ``config.run_dir``; a ``callback`` passed to
    ``learn`` runs on every rank and must decide the same on all of them.

    Args:
        config (TRPOConfig): the job's settings (rank 0's); ``num_envs`` and
            ``steps_per_iteration`` are per rank, ``total_steps`` is for the whole job.
        env_fn, policy, value: as for ``rl.TRPO``, on every rank.
        process_group (ProcessGroup, optional): the ranks of the job (default: the default
            group, which must be initialised, e.g. by ``init_process_group_from_env``).
            Every process of the default group must build the agent: it makes a second
            group for the value fit with ``torch.distributed.new_group``.

    Example:
        >>> init_process_group_from_env()  # doctest: +SKIP
        >>> agent = DistributedTRPO(TRPOConfig.from_preset("Hopper-v5")).learn()  # doctest: +SKIP
    """

    def __init__(
        self,
        config: TRPOConfig,
        env_fn: EnvFactory | None = None,
        policy: nn.Module | None = None,
        value: nn.Module | None = None,
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
        group = _job_group(process_group)
        self.process_group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.value_group = dist.new_group(ranks=dist.get_process_group_ranks(group))
        config = _broadcast_object(config, group)
        super().__init__(config, env_fn=env_fn, policy=policy, value=value)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())  # for threads
        broadcast_parameters(list(self.value.parameters()), group)
        seed = rank_seed(config.seed, self.rank)
        self.env_seed = seed
        self.action_generator.manual_seed(seed)
        # a replicated value fit shuffles the job's batch alike on every rank (rank 0's seed)
        self.shuffle_generator.manual_seed((config.seed if self.replicated_value_fit else seed) + 1)

    @property
    def steps_per_iteration(self) -> int:
        """Env steps per iteration of the job: ``config.steps_per_iteration`` per rank."""
        return self.config.steps_per_iteration * self.world_size

    # ------------------------------------------------------------------------- training
    def learn(
        self,
        total_steps: int | None = None,
        progress: ProgressMode | Progress = "auto",
        final_evaluation: bool = False,
        callback: Callable[[TRPO, dict[str, Any]], bool | None] | None = None,
    ) -> DistributedTRPO:
        """``TRPO.learn`` on every rank at once; progress and evaluations on rank 0 only."""
        if self.rank != 0:
            progress, final_evaluation = "none", False
        super().learn(total_steps, progress, final_evaluation, callback)
        return self

    def _run_files(self) -> RunFiles | None:
        return super()._run_files() if self.rank == 0 else None

    def _make_checkpointer(
        self, files: RunFiles | None, envs: VectorEnvs, collector: RolloutCollector
    ) -> Checkpointer | None:
        if self.config.run_dir is None:
            return None
        return RankCheckpointer(self, self.config.run_dir, envs, collector)

    def _stop_requested(self, signals: StopOnSignals) -> str | None:
        """Stop on every rank as soon as one rank has been signalled (SIGTERM first)."""
        number = signal.Signals[signals.signal_name].value if signals.signal_name else 0
        flag = torch.tensor([number], dtype=torch.int64, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.process_group)
        return signal.Signals(int(flag)).name if int(flag) else None

    def _collect(self, collector: RolloutCollector) -> Rollout:
        """The rank's rollout, then the normalization statistics merged over the job."""
        statistics = _running_statistics(collector.envs) if self.world_size > 1 else []
        references = [RunningMoments.of(s) for s in statistics]
        rollout = super()._collect(collector)
        for running, reference in zip(statistics, references, strict=True):
            merge_running_moments(running, reference, self.process_group, self.device)
        return rollout

    def _normalize_advantages(self, advantages: Tensor) -> Tensor:
        """Standardise with the mean and std of the job's batch."""
        if self.world_size == 1:
            return super()._normalize_advantages(advantages)
        count, total = _all_sum(
            [advantages.numel(), advantages.double().sum()], self.process_group, self.device
        ).tolist()
        if count <= 1:
            return advantages
        mean = total / count
        (squares,) = _all_sum(
            [(advantages.double() - mean).square().sum()], self.process_group, self.device
        ).tolist()
        return (advantages - mean) / (math.sqrt(squares / (count - 1)) + 1e-8)

    @property
    def replicated_value_fit(self) -> bool:
        """Whether the ranks fit the value function on the gathered job batch
        (``value.distributed_fit``: 'replicate', or 'auto' on gloo) rather than averaging
        gradients per minibatch."""
        mode = self.config.value.distributed_fit
        if mode == "auto":
            return dist.get_backend(self.value_group) == "gloo"
        return mode == "replicate"

    def _value_fit_overlaps_rollout(self) -> bool:
        """The per-minibatch all-reduce fit runs in Python: it stays off the rollout."""
        if self.world_size > 1 and not self.replicated_value_fit:
            return False
        return super()._value_fit_overlaps_rollout()

    def _fit_value(self, observations: Tensor, returns: Tensor, iteration: int) -> float:
        """The job's value fit on the value group: replicated on the gathered batch
        (``fit_value_replicated``) or data-parallel (``fit_value_data_parallel``)."""
        if self.world_size == 1:
            return super()._fit_value(observations, returns, iteration)
        settings = self.config.value
        fit = fit_value_replicated if self.replicated_value_fit else fit_value_data_parallel
        loss = fit(
            self.value,
            self.value_optimizer,
            observations,
            returns,
            settings.epochs,
            settings.minibatch_size,
            self.shuffle_generator,
            self.value_group,
        )
        if iteration % SYNC_CHECK_EVERY == 1:  # every rank alike: iteration is passed in
            check_parameters_in_sync(list(self.value.parameters()), self.value_group)
        return loss

    def _batch_statistics(
        self, entropies: Tensor, values: Tensor, returns: Tensor
    ) -> dict[str, Any]:
        """The job's sample count, mean entropy and explained variance (float64 sums)."""
        if self.world_size == 1:
            return super()._batch_statistics(entropies, values, returns)
        targets, residuals = returns.double(), (returns - values).double()
        count, entropy_sum, *moments = _all_sum(
            [
                returns.numel(),
                entropies.double().sum(),
                targets.sum(),
                targets.square().sum(),
                residuals.sum(),
                residuals.square().sum(),
            ],
            self.process_group,
            self.device,
        ).tolist()
        target_variance = _unbiased_variance(count, moments[0], moments[1])
        residual_variance = _unbiased_variance(count, moments[2], moments[3])
        explained = (
            1.0 - residual_variance / target_variance if target_variance > 0 else float("nan")
        )
        return {
            "samples": int(count),
            "entropy": entropy_sum / count if count else float("nan"),
            "explained_variance": explained,
        }

    def _episode_metrics(self, envs: VectorEnvs, finished: int) -> dict[str, Any]:
        """Episodes finished by all ranks; means over each rank's last ``episode_window``."""
        stats = envs.episode_stats
        local = (finished, list(stats.return_queue), list(stats.length_queue))
        gathered = _all_gather_objects(local, self.process_group)
        returns = [value for _, rank_returns, _ in gathered for value in rank_returns]
        lengths = [value for _, _, rank_lengths in gathered for value in rank_lengths]
        return {
            "episodes": sum(count for count, _, _ in gathered),
            "episode_return_mean": float(np.mean(returns)) if returns else None,
            "episode_length_mean": float(np.mean(lengths)) if lengths else None,
        }

    def _evaluate_during_training(self, clock: _Clock) -> dict[str, Any] | None:
        """Rank 0 evaluates; the others skip it. Whether an evaluation is due is decided
        alike on every rank (from the step count), so all ranks take the same path through
        the loop and issue the same collectives."""
        return super()._evaluate_during_training(clock) if self.rank == 0 else None

    # ------------------------------------------------------------------------- files
    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        total_steps: int | None = None,
        env_fn: EnvFactory | None = None,
        policy: nn.Module | None = None,
        value: nn.Module | None = None,
        process_group: dist.ProcessGroup | None = None,
        restart: bool = False,
    ) -> DistributedTRPO:
        """``TRPO.resume`` for a job: rank 0 reads the run directory and its checkpoint
        (which must come from a job of as many ranks) and sends them to every rank; each
        rank restores the networks and optimizers, and its own envs and RNGs."""
        group = _job_group(process_group)
        loaded: Any = None
        if dist.get_rank(group) == 0:
            try:
                config, checkpoint, path = load_run(run_dir, total_steps, restart)
                if checkpoint is not None:
                    check_world_size(checkpoint, run_dir, dist.get_world_size(group))
                loaded = (config, checkpoint, path)
            except Exception as error:  # every rank raises it, none waits for the others
                loaded = error
        loaded = _broadcast_object(loaded, group)
        if isinstance(loaded, Exception):
            raise loaded
        config, checkpoint, path = loaded
        agent = cls(config, env_fn=env_fn, policy=policy, value=value, process_group=group)
        if checkpoint is not None:
            own = _rank_checkpoint(checkpoint, agent.rank)
            restore_agent(agent, own)
            agent.resumed_from, agent._resume_state = path, own
        if agent.rank == 0:
            agent._hold_for_resume(run_dir)
            for repair in RunFiles(run_dir).drop_rows_after(agent.iteration, agent.step):
                warnings.warn(repair, CheckpointWarning, stacklevel=2)
        return agent


def _job_group(process_group: dist.ProcessGroup | None) -> dist.ProcessGroup:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "DistributedTRPO needs torch.distributed initialised: start the job with "
            "torchrun (torchrun --nproc-per-node K -m rl.train ARGS) or call "
            "rl.distributed.init_process_group_from_env() first"
        )
    return process_group if process_group is not None else dist.group.WORLD


def _unbiased_variance(count: float, total: float, squares: float) -> float:
    if count <= 1:
        return float("nan")
    return (squares - total * total / count) / (count - 1)


# ------------------------------------------------------------------------- checkpoints
RANK_STATES = "rank_states"  # checkpoint key: [{"envs", "rng"}] of ranks 1 .. K-1


def _rank_checkpoint(checkpoint: dict[str, Any], rank: int) -> dict[str, Any]:
    """The checkpoint as rank ``rank`` restores it: its own envs and RNGs."""
    if rank == 0:
        return checkpoint
    return {**checkpoint, **checkpoint[RANK_STATES][rank - 1]}


class RankCheckpointer(Checkpointer):
    """``Checkpointer`` for one rank of a job: at each save every rank sends its envs' and
    RNGs' state to rank 0, which writes one checkpoint for the job (rank 0's state where a
    single process keeps its own, the others' under ``"rank_states"``, and ``"world_size"``).

    Args:
        agent (DistributedTRPO): this rank's agent.
        directory (str or Path): the run directory (written by rank 0 only).
        envs, collector: this rank's training envs and their collector.
    """

    def __init__(
        self,
        agent: DistributedTRPO,
        directory: str | Path,
        envs: VectorEnvs,
        collector: RolloutCollector,
    ) -> None:
        super().__init__(agent, directory, envs, collector, agent.config.checkpoint_every)
        self.agent: DistributedTRPO = agent

    def save(self, seconds: float) -> Path:
        """Gather every rank's state and write the checkpoint (rank 0), once per iteration;
        every rank must call it at the same iteration."""
        agent = self.agent
        if self.saved_iteration != agent.iteration:
            own = {
                "envs": capture_env_state(self.envs, self.collector),
                "rng": capture_rng_states(_agent_generators(agent)),
            }
            gathered: list[Any] | None = [None] * agent.world_size if agent.rank == 0 else None
            source = dist.get_global_rank(agent.process_group, 0)
            dist.gather_object(own, gathered, dst=source, group=agent.process_group)
            if gathered is not None:
                self._write(gathered, seconds)
            self.saved_iteration = agent.iteration
        return self.directory / CHECKPOINT_FILE

    def _write(self, rank_states: list[Any], seconds: float) -> None:
        state = build_checkpoint(self.agent, self.envs, self.collector, seconds)
        state["world_size"] = len(rank_states)
        state[RANK_STATES] = rank_states[1:]
        try:
            write_checkpoint(state, self.directory)
        except OSError as error:
            raise CheckpointWriteError(
                f"cannot write the checkpoint of iteration {self.agent.iteration} to "
                f"{str(self.directory)!r}: {error.strerror or error}; the checkpoints "
                "already there are intact"
            ) from error
