"""Collectives per iteration of a data-parallel TRPO job, by who issues them, against the
communication model of docs/distributed.md.

Spawns ``--ranks`` gloo ranks on this machine (a file rendezvous), each training the preset
of ``--env`` (with ``--set`` overrides) for ``--iterations`` iterations with
``rl.comm.DistributedComm``, with every ``torch.distributed`` collective counted (calls and
payload bytes: an all-reduce's buffer, an all-gather's contribution of one rank) and
attributed to the first ``trust_region`` or ``rl`` module on the stack. Each policy step's
CG products and line-search candidates are recorded, and the model's prediction (the
``predict`` function below) is printed beside the measurement. The counts do not depend on
the machine's speed; 4 ranks on 2 cores are slow but count right.

    python benchmarks/collectives.py [--env HalfCheetah-v5] [--ranks 2] [--iterations 6]
        [--set key=value ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import sys
import tempfile
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trust_region.distributed import WIDENING_LIMIT_BYTES

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


def _nbytes(name: str, args: tuple) -> int:
    """An all-reduce's or broadcast's buffer; what one rank contributes to an all-gather."""
    tensor = args[1] if name == "all_gather" and len(args) > 1 else (args[0] if args else None)
    return tensor.numel() * tensor.element_size() if isinstance(tensor, torch.Tensor) else 0


def _install(counts: collections.Counter, sizes: collections.Counter) -> None:
    for name in COUNTED:
        original = getattr(dist, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            key = f"{_origin()} ({_name})"
            counts[key] += 1
            sizes[key] += _nbytes(_name, args)
            return _original(*args, **kwargs)

        setattr(dist, name, counted)


def _record_steps(optimizer, steps: list) -> None:
    step = optimizer.step

    def recorded(*args, **kwargs):
        result = step(*args, **kwargs)
        steps.append({
            "fvp": result.fvp, "cg": result.cg_iterations, "reason": result.reason,
            "candidates": _candidates(result), "samples": kwargs.get("num_samples"),
        })  # fmt: skip
        return result

    optimizer.step = recorded


def _candidates(result) -> int:
    """Line-search candidates evaluated (0 when the step was rejected before the search)."""
    return result.backtracks + 1 if result.expected_improvement > 0.0 else 0


def _rank(rank, world_size, store, env_id, iterations, overrides, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world_size)  # fmt: skip
    import rl
    from rl.comm import DistributedComm

    counts: collections.Counter = collections.Counter()
    sizes: collections.Counter = collections.Counter()
    config = rl.TRPOConfig.from_preset(env_id, source="zoo")
    config = config.with_overrides({"total_steps": 10**9, "eval_every": 0, **overrides})
    agent = rl.TRPO(config, comm=DistributedComm())
    steps: list = []
    _record_steps(agent.policy_optimizer, steps)
    _install(counts, sizes)
    agent.learn(total_steps=agent.steps_per_iteration * iterations, progress="none")
    shapes = {
        "policy": sum(p.numel() for p in agent._policy_parameters),
        "obs_dim": agent.observation_dim,
        "head": _head_shape(agent),
        "sync_check_every": agent.policy_optimizer.sync_check_every,
    }
    Path(f"{out}.{rank}").write_text(json.dumps(
        {"counts": counts, "bytes": sizes, "steps": steps, "shapes": shapes,
         "config": json.loads(config.model_dump_json())}
    ))  # fmt: skip
    dist.barrier()
    sys.stdout.flush()
    os._exit(0)


def _head_shape(agent) -> list[int]:
    """``[out, k+1, feature parameters]`` of the policy's linear head ([] without one)."""
    from rl.surrogate import policy_linear_head

    observations = torch.zeros(1, agent.observation_dim)
    head = policy_linear_head(agent.policy, observations, agent._policy_parameters)
    if head is None:
        return []
    out, k = head.weight.shape
    return [out, k + (head.bias is not None), sum(p.numel() for p in head.feature_params)]


def predict(run: dict, world_size: int, iterations: int) -> dict[str, float]:
    """The communication model of docs/distributed.md: collectives and payload bytes of the
    whole run, from the recorded policy steps (CG products ``n``, candidates ``L``)."""
    config, shapes, K = run["config"], run["shapes"], world_size
    P, obs_dim = shapes["policy"], shapes["obs_dim"]
    calls = payload = 0.0
    for step in run["steps"]:
        n, L = step["cg"], step["candidates"]
        payload += 8 * K * 2 + 16 * L  # the step's first all-reduce; the line search
        if step["reason"] == "non-finite loss" and not L:
            calls += 1
        elif step["fvp"] == "ggn-head":
            out, width, features = shapes["head"]
            packed = 4 * P <= WIDENING_LIMIT_BYTES  # gradient and A in one float64 buffer
            calls += 4 + 2 * n + L + (not packed)
            payload += (8 if packed else 4) * P + 8 * width * width
            payload += 4 * (n + 1) * (out * width + features)
        else:
            calls += 2 + n + L
            payload += 4 * P * (1 + n)
    checks = math.ceil(len(run["steps"]) / shapes["sync_check_every"])
    payload += 8 * K * 2 * checks  # the policy checksums ride in the step's first all-reduce
    moments = (1 + 2 * obs_dim) * config["normalize_observations"]
    moments += 3 * config["normalize_rewards"]
    per_iteration_calls = 1 + 1  # end of iteration; the replicated fit's one all-gather
    # batch sums, episodes finished; per rank: signal, episode count, window returns and lengths
    per_iteration_bytes = 8 * (7 + K * (2 + 2 * config["episode_window"]) + moments)
    # the all-gather pads to the largest rank's valid samples M (rank 0's taken here)
    payload += sum(4 * (step["samples"] or 0) * (obs_dim + 1) for step in run["steps"])
    if config["normalize_advantages"]:
        per_iteration_calls += 1
        per_iteration_bytes += 8 * 3 * K
    else:  # the fit gathers the sizes itself
        per_iteration_calls += 1
        per_iteration_bytes += 8
    value_checks = math.ceil(iterations / 10)
    calls += iterations * per_iteration_calls + value_checks + 1  # + the last stop check
    payload += iterations * per_iteration_bytes + value_checks * 8 * K * 2 + 8
    return {"collectives": calls, "bytes": payload}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", help="write the measurement and the prediction here")
    args = parser.parse_args()
    from rl.config import parse_overrides

    overrides = parse_overrides(args.set)
    with tempfile.TemporaryDirectory() as directory:
        out = str(Path(directory) / "counts")
        mp.start_processes(
            _rank, args=(args.ranks, str(Path(directory) / "store"), args.env, args.iterations,
                         overrides, out), nprocs=args.ranks, start_method="spawn",
        )  # fmt: skip
        result = json.loads(Path(f"{out}.0").read_text())
    per = args.iterations
    measured = {
        "collectives": sum(result["counts"].values()),
        "bytes": sum(result["bytes"].values()),
    }
    model = predict(result, args.ranks, per)
    steps = result["steps"]
    print(f"{args.env}, {args.ranks} ranks, per iteration (rank 0, {per} iterations; CG "
          f"products {sum(s['cg'] for s in steps) / per:.1f}, line-search candidates "
          f"{sum(s['candidates'] for s in steps) / per:.1f}):")  # fmt: skip
    print("| issued by | collectives | bytes |")
    print("|---|---|---|")
    for key in sorted(result["counts"], key=lambda k: -result["counts"][k]):
        calls, size = result["counts"][key] / per, result["bytes"][key] / per
        print(f"| {key} | {calls:.1f} | {size:,.0f} |")
    print(f"| total | {measured['collectives'] / per:.1f} | {measured['bytes'] / per:,.0f} |")
    print(f"| model (docs/distributed.md) | {model['collectives'] / per:.1f} | "
          f"{model['bytes'] / per:,.0f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(
            {**result, "measured": measured, "model": model, "iterations": per,
             "ranks": args.ranks}, indent=1,
        ))  # fmt: skip


if __name__ == "__main__":
    main()
