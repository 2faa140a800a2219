"""Steps/s of one rank held to one core against two ranks (torchrun, gloo), HalfCheetah-v5.

Runs, one after the other, each ``--repeats`` times (interleaved, so that a slow spell of a
shared machine hits all of them alike):

    one-core    trpo train, pinned to core 0 (taskset -c 0): the single process
    1 rank      torchrun --nproc-per-node 1 -m rl.train, pinned to core 0: the job code path
    2 ranks     torchrun --nproc-per-node 2 -m rl.train: each rank its own 2 envs x 1,024
                steps, so an iteration learns from 4,096 samples (twice the batch)
    2 ranks,    the same with steps_per_iteration=1024 per rank: 2,048 samples per
    same batch  iteration, as one rank learns from (for reference)

All use the HalfCheetah-v5 preset (RL Zoo's MuJoCo settings: 2 envs x 1,024 steps per
rank, 25 CG steps, 20 value epochs of minibatches of 128, obs + reward normalization) and
the same number of iterations. Steps/s is measured from metrics.jsonl between the end of
the first iteration and the end of the last (start-up, imports and the first iteration
left out; no evaluation inside). Speed-ups are against the one-core single process.

    python benchmarks/distributed.py                 # 15 iterations each, 2 repeats
    python benchmarks/distributed.py --iterations 8 --repeats 1 --out results.json
    python benchmarks/distributed.py --set value.minibatch_size=512   # fewer value-fit steps
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ENV_ID = "HalfCheetah-v5"
PER_RANK_BATCH = 2048  # the preset's steps_per_iteration


def variants(iterations: int) -> dict[str, dict]:
    """name -> command prefix, ranks and per-rank steps per iteration."""
    taskset = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return {
        "one-core single process": {
            "command": [*taskset, sys.executable, "-m", "rl.cli", "train"],
            "ranks": 1,
            "per_rank": PER_RANK_BATCH,
        },
        "one-core 1-rank job": {
            "command": [*taskset, *torchrun, "--nproc-per-node", "1", "-m", "rl.train"],
            "ranks": 1,
            "per_rank": PER_RANK_BATCH,
        },
        "2 ranks, batch x2": {
            "command": [*torchrun, "--nproc-per-node", "2", "-m", "rl.train"],
            "ranks": 2,
            "per_rank": PER_RANK_BATCH,
        },
        "2 ranks, same batch": {
            "command": [*torchrun, "--nproc-per-node", "2", "-m", "rl.train"],
            "ranks": 2,
            "per_rank": PER_RANK_BATCH // 2,
        },
    }


def run_once(spec: dict, iterations: int, run_dir: Path, seed: int, overrides: list[str]) -> dict:
    """One training run; steps/s between the first and the last metrics row."""
    job_batch = spec["ranks"] * spec["per_rank"]
    arguments = [
        ENV_ID, "--preset", "zoo", "--total-steps", str(iterations * job_batch),
        "--seed", str(seed), "--run-dir", str(run_dir), "--quiet",
        "--set", f"steps_per_iteration={spec['per_rank']}",
        *(item for override in overrides for item in ("--set", override)),
    ]  # fmt: skip
    environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    started = time.perf_counter()
    done = subprocess.run(
        [*spec["command"], *arguments], capture_output=True, text=True, env=environment
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(spec['command'])} failed:\n{done.stderr[-8000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0], rows[-1]
    steps_per_s = (last["step"] - first["step"]) / (last["time"] - first["time"])
    return {
        "steps_per_s": steps_per_s,
        "batch": job_batch,
        "iterations": len(rows),
        "update_ms": 1e3 * statistics.median(row["update_time"] for row in rows[1:]),
        "rollout_ms": 1e3 * statistics.median(row["rollout_time"] for row in rows[1:]),
        "wall_s": wall,
    }


def table(results: dict[str, list[dict]]) -> str:
    baseline = statistics.median(r["steps_per_s"] for r in results["one-core single process"])
    lines = [
        "| run | samples / iteration | steps/s (median) | runs | speed-up | "
        "rollout ms / update ms (rank 0, median) |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        median = statistics.median(r["steps_per_s"] for r in runs)
        each = ", ".join(f"{r['steps_per_s']:,.0f}" for r in runs)
        rollout = statistics.median(r["rollout_ms"] for r in runs)
        update = statistics.median(r["update_ms"] for r in runs)
        lines.append(
            f"| {name} | {runs[0]['batch']:,} | {median:,.0f} | {each} | "
            f"{median / baseline:.2f}x | {rollout:.0f} / {update:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=15, help="iterations per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for every run (repeatable), e.g. value.minibatch_size=512",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="run only these variants (repeatable; the single process always)",
    )
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, Python {platform.python_version()}; {ENV_ID}, "
        f"{args.iterations} iterations per run, {args.repeats} runs each (interleaved)"
        + (f"; overrides: {' '.join(args.set)}" if args.set else ""),
        flush=True,
    )
    specs = variants(args.iterations)
    if args.only:
        specs = {name: spec for name, spec in specs.items()
                 if name in args.only or name == "one-core single process"}  # fmt: skip
    results: dict[str, list[dict]] = {name: [] for name in specs}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for name, spec in specs.items():
                run_dir = Path(scratch) / f"{len(results[name])}-{name.replace(' ', '_')}"
                result = run_once(spec, args.iterations, run_dir, repeat, args.set)
                results[name].append(result)
                print(f"  {name}: {result['steps_per_s']:,.0f} steps/s", flush=True)
    print(f"(measured in {time.perf_counter() - started:.0f} s)\n")
    print(table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
