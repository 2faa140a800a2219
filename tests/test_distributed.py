"""Two gloo ranks on CPU take exactly the step one process takes on the whole batch."""

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from tests import test_head
from trust_region import GGNClosureResult, TrustRegionOptimizer, categorical_fisher_vp
from trust_region.curvature import functional_model
from trust_region.distributed import WeightedReducer

SIZES = (40, 88)  # unequal shares: the average must be weighted by sample count


def make_problem(kind="ggn"):
    """A classifier, or (``kind="head"``) a Gaussian policy with a linear head: the
    head-eliminated solve, whose A is reduced with the gradient."""
    if kind == "head":
        model, x, actions, advantages = test_head.make_problem(samples=sum(SIZES))
        return model, x, torch.stack([actions, advantages[:, None].expand_as(actions)], 1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(sum(SIZES), 4, dtype=torch.float64)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return model, x, y


def make_closure(model, x, y, ggn):
    if ggn == "head":
        return test_head.make_closure(model, x, y[:, 0], y[:, 1, 0])
    with torch.no_grad():
        old = model(x).log_softmax(-1)
    fn = functional_model(model, list(model.parameters()))

    def closure():
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        kl = (old.exp() * (old - logits.log_softmax(-1))).sum(-1).mean()
        if not ggn:
            return loss, kl
        return GGNClosureResult(
            loss, kl, lambda ps, idx: fn(ps, x if idx is None else x[idx]),
            categorical_fisher_vp, len(x),
        )  # fmt: skip

    return closure


def run_steps(model, x, y, ggn, steps=3, **kwargs):
    opt = TrustRegionOptimizer(model.parameters(), max_kl=0.02, cg_iters=12, **kwargs)
    results = [opt.step(make_closure(model, x, y, ggn), num_samples=len(x)) for _ in range(steps)]
    if ggn == "head":
        assert {r.fvp for r in results} == {"ggn-head"}
    return results, [p.detach().clone() for p in model.parameters()]


def worker(rank: int, store: str, ggn: bool, out: str) -> None:
    torch.set_num_threads(1)
    # A file rendezvous: no port to pick (a free port found first can be taken by another
    # process before rank 0 binds it; seen once as a failed test).
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model, x, y = make_problem(ggn)
        if rank == 1:  # rank 1 starts elsewhere: the optimizer must broadcast rank 0's values
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1.0)
        start = sum(SIZES[:rank])
        shard = slice(start, start + SIZES[rank])
        results, params = run_steps(
            model, x[shard], y[shard], ggn, process_group=dist.group.WORLD, sync_check_every=1
        )
        torch.save({"params": params, "kl": [r.kl for r in results], "packed": packed_means(rank)},
                   f"{out}.{rank}")  # fmt: skip
        dist.barrier()  # no rank tears the group down while the other still talks to it
    except BaseException:
        dist.destroy_process_group()
        raise
    # Done and saved: leave without gloo's teardown, which has aborted a spawned rank at
    # exit ("terminate called without an active exception", seen twice in full runs).
    os._exit(0)


def packed_means(rank: int) -> list[bool]:
    """Whether ``WeightedReducer.means`` (one all-reduce, float32 widened to float64) gives
    what one all-reduce per tensor gives, bit for bit."""
    generator = torch.Generator().manual_seed(rank)
    vector = torch.randn(1000, generator=generator) * 10.0 ** torch.randint(-30, 30, (1000,))
    matrix = torch.randn(7, 7, generator=generator, dtype=torch.float64)
    reducer = WeightedReducer(dist.group.WORLD, SIZES[rank], torch.device("cpu"))
    packed = reducer.means(vector, matrix)
    separate = [reducer.mean(vector), reducer.mean(matrix)]
    return [torch.equal(a, b) and a.dtype == b.dtype for a, b in zip(packed, separate, strict=True)]


@pytest.mark.parametrize("ggn", [False, True, "head"])
def test_two_ranks_take_the_single_process_step(tmp_path: Path, ggn) -> None:
    model, x, y = make_problem(ggn)
    single, expected = run_steps(model, x, y, ggn)
    assert all(r.accepted for r in single)

    out = str(tmp_path / "rank")
    store = str(tmp_path / "rendezvous")
    mp.start_processes(worker, args=(store, ggn, out), nprocs=2, start_method="spawn")
    for rank in range(2):
        saved = torch.load(f"{out}.{rank}", weights_only=True)
        for got, want in zip(saved["params"], expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        assert saved["kl"] == pytest.approx([r.kl for r in single], rel=1e-6)
        assert saved["packed"] == [True, True]
