"""All-reduce helpers so that every rank takes the identical trust-region step.

With ``process_group=None`` every helper is the identity: no communication, no overhead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["WeightedReducer", "broadcast_parameters", "check_parameters_in_sync"]


class WeightedReducer:
    """Averages tensors over the ranks of a group, weighted by each rank's sample count.

    Args:
        group (ProcessGroup or None): the group; None for a single process.
        weight (float): this rank's weight (its number of samples).
    """

    def __init__(self, group: dist.ProcessGroup | None, weight: float, device: torch.device):
        self.group = group
        self.local_share = 1.0
        if group is not None:
            total = torch.tensor([float(weight)], dtype=torch.float64, device=device)
            dist.all_reduce(total, group=group)
            if float(total) <= 0.0:
                raise ValueError(f"the ranks' sample weights sum to {float(total)}; must be > 0")
            self.local_share = float(weight) / float(total)

    def mean(self, tensor: Tensor) -> Tensor:
        """Weighted mean over ranks of ``tensor`` (returns a new tensor)."""
        if self.group is None:
            return tensor
        reduced = tensor * self.local_share
        dist.all_reduce(reduced, group=self.group)
        return reduced

    def scalars(self, *values: Tensor) -> list[float]:
        """Weighted means over ranks of scalar tensors, as Python floats (one all-reduce)."""
        stacked = torch.stack([v.detach().reshape(()).to(torch.float64) for v in values])
        return [float(x) for x in self.mean(stacked)]


def broadcast_parameters(params: Sequence[Tensor], group: dist.ProcessGroup | None) -> None:
    """Copy the parameters of the group's rank 0 to every rank."""
    if group is None:
        return
    source = dist.get_global_rank(group, 0)
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=source, group=group)


def check_parameters_in_sync(params: Sequence[Tensor], group: dist.ProcessGroup | None) -> None:
    """Raise if the ranks' parameters differ (a cheap checksum: sum and sum of squares)."""
    if group is None:
        return
    with torch.no_grad():
        checksum = torch.stack(
            [
                sum(p.detach().double().sum() for p in params),
                sum(p.detach().double().square().sum() for p in params),
            ]
        )
    low, high = checksum.clone(), checksum.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN, group=group)
    dist.all_reduce(high, op=dist.ReduceOp.MAX, group=group)
    if not torch.equal(low, high):
        raise RuntimeError(
            f"TrustRegionOptimizer: parameters differ between ranks (checksums range "
            f"{low.tolist()} .. {high.tolist()}); every rank must run the same closure on "
            "its own data and nothing else may change the parameters"
        )
