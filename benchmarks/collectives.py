"""Collectives per iteration of a data-parallel TRPO job, by who issues them.

Spawns ``--ranks`` gloo ranks on this machine (a file rendezvous), each training the preset
of ``--env`` for ``--iterations`` iterations with ``rl.comm.DistributedComm``, with every
``torch.distributed`` collective counted (calls and bytes) and attributed to the first
``trust_region`` or ``rl`` module on the stack: the optimizer's step (gradient, Fisher
products, line search) against the rl side (statistics, advantages, metrics, stop, value
fit, checkpoints). The counts do not depend on the machine's speed; 4 ranks on 2 cores are
slow but count right.

    python benchmarks/collectives.py [--env HalfCheetah-v5] [--ranks 2] [--iterations 6]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

COUNTED = (
    "all_reduce", "all_gather", "broadcast", "gather", "scatter", "barrier",
    "all_gather_object", "broadcast_object_list", "gather_object", "scatter_object_list",
)  # fmt: skip


def _origin() -> str:
    for frame in reversed(traceback.extract_stack()[:-2]):
        name = frame.filename
        for package in ("trust_region", "rl"):
            marker = f"{os.sep}{package}{os.sep}"
            if marker in name:
                return f"{package}/{Path(name).stem}.{frame.name}"
    return "other"


def _nbytes(args: tuple) -> int:
    first = args[0] if args else None
    if isinstance(first, torch.Tensor):
        return first.numel() * first.element_size()
    if isinstance(first, list) and first and isinstance(first[0], torch.Tensor):
        return sum(t.numel() * t.element_size() for t in first)
    return 0


def _install(counts: collections.Counter, sizes: collections.Counter) -> None:
    for name in COUNTED:
        original = getattr(dist, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            key = f"{_origin()} ({_name})"
            counts[key] += 1
            sizes[key] += _nbytes(args)
            return _original(*args, **kwargs)

        setattr(dist, name, counted)


def _rank(rank: int, world_size: int, store: str, env_id: str, iterations: int, out: str):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world_size)  # fmt: skip
    import rl
    from rl.comm import DistributedComm

    counts: collections.Counter = collections.Counter()
    sizes: collections.Counter = collections.Counter()
    config = rl.TRPOConfig.from_preset(env_id)
    config = config.with_overrides({"total_steps": 10**9, "eval_every": 0})
    agent = rl.TRPO(config, comm=DistributedComm())
    _install(counts, sizes)
    agent.learn(total_steps=agent.steps_per_iteration * iterations, progress="none")
    Path(f"{out}.{rank}").write_text(json.dumps({"counts": counts, "bytes": sizes}))
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        out = str(Path(directory) / "counts")
        mp.start_processes(
            _rank, args=(args.ranks, str(Path(directory) / "store"), args.env, args.iterations,
                         out), nprocs=args.ranks, start_method="spawn",
        )  # fmt: skip
        result = json.loads(Path(f"{out}.0").read_text())
    per = args.iterations
    print(f"{args.env}, {args.ranks} ranks, per iteration (rank 0, {per} iterations):")
    print("| issued by | collectives | bytes |")
    print("|---|---|---|")
    total_calls = total_bytes = 0
    for key in sorted(result["counts"], key=lambda k: -result["counts"][k]):
        calls, size = result["counts"][key] / per, result["bytes"][key] / per
        total_calls, total_bytes = total_calls + calls, total_bytes + size
        print(f"| {key} | {calls:.1f} | {size:,.0f} |")
    print(f"| total | {total_calls:.1f} | {total_bytes:,.0f} |")


if __name__ == "__main__":
    main()
