"""All-reduce helpers so that every rank takes the identical trust-region step.

With ``process_group=None`` every helper is the identity: no communication, no overhead.
A step opens with one all-reduce (:func:`open_step`: every rank's weight and loss, and the
parameter checksums when due); :class:`WeightedReducer` then averages tensors, several of
them in one all-reduce where they are ready together (:meth:`WeightedReducer.means`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

# ``WeightedReducer.means`` packs tensors of different dtypes in float64 unless that adds
# more than this many bytes (a latency of ~1 ms on gloo is ~1 MB of loopback bandwidth)
WIDENING_LIMIT_BYTES = 1 << 20

__all__ = [
    "WIDENING_LIMIT_BYTES",
    "WeightedReducer",
    "broadcast_parameters",
    "check_parameters_in_sync",
    "gather_by_sum",
    "open_step",
]


class WeightedReducer:
    """Averages tensors over the ranks of a group, weighted by each rank's sample count.

    Args:
        group (ProcessGroup or None): the group; None for a single process.
        weight (float): this rank's weight (its number of samples).
        device (torch.device): where the weights' all-reduce runs.
        local_share (float, optional): this rank's share of the weights, when known
            (:func:`open_step`): then nothing is sent here (default: None).
    """

    def __init__(
        self,
        group: dist.ProcessGroup | None,
        weight: float,
        device: torch.device,
        local_share: float | None = None,
    ):
        self.group = group
        self.local_share = 1.0 if local_share is None else local_share
        if group is not None and local_share is None:
            total = torch.tensor([float(weight)], dtype=torch.float64, device=device)
            dist.all_reduce(total, group=group)
            self.local_share = _share(float(weight), float(total))

    def mean(self, tensor: Tensor) -> Tensor:
        """Weighted mean over ranks of ``tensor`` (returns a new tensor)."""
        if self.group is None:
            return tensor
        reduced = tensor * self.local_share
        dist.all_reduce(reduced, group=self.group)
        return reduced

    def means(self, *tensors: Tensor) -> list[Tensor]:
        """Weighted means over ranks of ``tensors``, in one all-reduce: each is weighted in
        its own dtype, then packed flat (in float64 when the dtypes differ; a float32 sum of
        two ranks taken in float64 and rounded back is the float32 sum, bit for bit). When
        widening would add over ``WIDENING_LIMIT_BYTES``, one all-reduce per tensor."""
        if self.group is None:
            return list(tensors)
        dtypes = {t.dtype for t in tensors}
        dtype = dtypes.pop() if len(dtypes) == 1 else torch.float64
        widened = sum(t.numel() * (8 - t.element_size()) for t in tensors if t.dtype != dtype)
        if widened > WIDENING_LIMIT_BYTES:  # bandwidth, not latency, would dominate
            return [self.mean(t) for t in tensors]
        flat = torch.cat([(t * self.local_share).reshape(-1).to(dtype) for t in tensors])
        dist.all_reduce(flat, group=self.group)
        pieces = flat.split([t.numel() for t in tensors])
        return [p.view_as(t).to(t.dtype) for p, t in zip(pieces, tensors, strict=True)]

    def scalars(self, *values: Tensor) -> list[float]:
        """Weighted means over ranks of scalar tensors, as Python floats (one all-reduce)."""
        stacked = torch.stack([v.detach().reshape(()).to(torch.float64) for v in values])
        return [float(x) for x in self.mean(stacked)]


def _share(weight: float, total: float) -> float:
    if total <= 0.0:
        raise ValueError(f"the ranks' sample weights sum to {total}; must be > 0")
    return weight / total


def gather_by_sum(values: Tensor, group: dist.ProcessGroup) -> Tensor:
    """Every rank's 1-D ``values`` as rows ``(K, n)`` in rank order, by one all-reduce:
    rank r fills row r of zeros, and adding zeros is exact (a -0.0 comes back as 0.0)."""
    rows = values.new_zeros(dist.get_world_size(group), values.numel())
    rows[dist.get_rank(group)] = values.reshape(-1)
    dist.all_reduce(rows, group=group)
    return rows


def open_step(
    group: dist.ProcessGroup | None, weight: float, loss: Tensor, check: Sequence[Tensor] = ()
) -> tuple[WeightedReducer, float]:
    """A step's first collective: every rank's ``weight`` and ``loss`` (and, when ``check``
    holds the parameters, their checksums: RuntimeError if the ranks differ) in one
    all-reduce. Returns the step's reducer and the weighted mean loss, summed in rank order
    (on two ranks what ``WeightedReducer.scalars`` gives, bit for bit)."""
    local = loss.detach().reshape(()).to(torch.float64)
    if group is None:
        return WeightedReducer(None, weight, loss.device, 1.0), float(local)
    head = torch.stack([local.new_tensor(float(weight)), local])
    table = gather_by_sum(torch.cat([head, _checksum(check).to(local.device)]), group).cpu()
    _compare_checksums(table[:, 2:])
    weights, losses = table[:, 0].tolist(), table[:, 1].tolist()
    total = float(sum(weights))
    mean = sum(value * _share(w, total) for w, value in zip(weights, losses, strict=True))
    share = _share(float(weight), total)
    return WeightedReducer(group, weight, loss.device, share), mean


def broadcast_parameters(params: Sequence[Tensor], group: dist.ProcessGroup | None) -> None:
    """Copy the parameters of the group's rank 0 to every rank."""
    if group is None:
        return
    source = dist.get_global_rank(group, 0)
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=source, group=group)


def check_parameters_in_sync(params: Sequence[Tensor], group: dist.ProcessGroup | None) -> None:
    """Raise if the ranks' parameters differ (a cheap checksum: sum and sum of squares;
    one all-reduce)."""
    if group is None:
        return
    device = params[0].device if params else "cpu"
    _compare_checksums(gather_by_sum(_checksum(params).to(device), group).cpu())


def _checksum(params: Sequence[Tensor]) -> Tensor:
    if not params:
        return torch.zeros(0, dtype=torch.float64)
    with torch.no_grad():
        return torch.stack(
            [
                sum(p.detach().double().sum() for p in params),
                sum(p.detach().double().square().sum() for p in params),
            ]
        ).cpu()


def _compare_checksums(table: Tensor) -> None:
    """RuntimeError unless every row (rank) of ``(K, 2)`` checksums is the same."""
    if table.numel() == 0 or bool((table == table[0]).all()):
        return
    low, high = table.min(dim=0).values, table.max(dim=0).values
    raise RuntimeError(
        f"TrustRegionOptimizer: parameters differ between ranks (checksums range "
        f"{low.tolist()} .. {high.tolist()}); every rank must run the same closure on "
        "its own data and nothing else may change the parameters"
    )
