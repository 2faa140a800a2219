"""The optimizer and TRPO on a CUDA GPU against the CPU: the same numbers, and the speed.

1. ``TrustRegionOptimizer`` in float64 on the same weights and batches, CPU and CUDA, for
   ``fvp="hessian"`` and ``"ggn"``: the largest parameter difference after three steps and
   each step's KL and CG iterations on both.
2. One step of a larger classifier (float32, "ggn", 8,192 samples): seconds on the CPU (all
   its cores) and on the GPU.
3. ``trpo train HalfCheetah-v5 --preset zoo`` for ``--iterations`` iterations with
   ``device=cpu`` and ``device=cuda``: median update time and env steps per second.

    python benchmarks/cuda_check.py [--iterations 10] [--out results.json]

Needs a CUDA GPU (exits with a message without one).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from trust_region import (
    GGNClosureResult,
    TrustRegionOptimizer,
    categorical_fisher_vp,
    functional_model,
)


def classifier(sizes: tuple[int, ...], seed: int, device: str, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.Tanh()]
    return nn.Sequential(*layers[:-1]).to(device=device, dtype=dtype)


def steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, fvp: str, count: int) -> list:
    """``count`` trust-region steps; their results."""
    params = list(model.parameters())
    model_fn = functional_model(model, params)
    optimizer = TrustRegionOptimizer(params, max_kl=0.01, fvp=fvp)
    results = []
    for _ in range(count):
        old = model(x).log_softmax(-1).detach()

        def closure(old: torch.Tensor = old):
            logits = model(x)
            kl = (old.exp() * (old - logits.log_softmax(-1))).sum(-1).mean()
            loss = nn.functional.cross_entropy(logits, y)
            if fvp == "hessian":
                return loss, kl
            return GGNClosureResult(
                loss=loss, kl=kl, num_samples=len(x), output_fisher_vp=categorical_fisher_vp,
                outputs_fn=lambda ps, idx: model_fn(ps, x if idx is None else x[idx]),
            )  # fmt: skip

        results.append(optimizer.step(closure))
    return results


def agreement() -> dict:
    """Part 1: float64, CPU against CUDA."""
    found = {}
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(512, 8, generator=generator, dtype=torch.float64)
    y = torch.randint(0, 5, (512,), generator=generator)
    for fvp in ("hessian", "ggn"):
        runs = {}
        for device in ("cpu", "cuda"):
            model = classifier((8, 64, 64, 5), 1, device, torch.float64)
            results = steps(model, x.to(device), y.to(device), fvp, 3)
            runs[device] = (model, results)
        difference = max(
            float((a.detach().cpu() - b.detach().cpu()).abs().max())
            for a, b in zip(runs["cpu"][0].parameters(), runs["cuda"][0].parameters(), strict=True)
        )
        found[fvp] = {
            "max_parameter_difference": difference,
            "kl": {d: [float(r.kl) for r in runs[d][1]] for d in runs},
            "cg_iterations": {d: [int(r.cg_iterations) for r in runs[d][1]] for d in runs},
            "accepted": {d: [bool(r.accepted) for r in runs[d][1]] for d in runs},
        }
    return found


def speed() -> dict:
    """Part 2: one float32 "ggn" step of a 256-1024-1024-10 classifier on 8,192 samples."""
    found = {}
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8192, 256, generator=generator)
    y = torch.randint(0, 10, (8192,), generator=generator)
    for device in ("cpu", "cuda"):
        model = classifier((256, 1024, 1024, 10), 1, device, torch.float32)
        xs, ys = x.to(device), y.to(device)
        steps(model, xs, ys, "ggn", 1)  # warm-up
        times = []
        for _ in range(3):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            steps(model, xs, ys, "ggn", 1)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        found[device] = min(times)
    found["cpu_threads"] = torch.get_num_threads()
    found["speed_up"] = found["cpu"] / found["cuda"]
    return found


def training(iterations: int) -> dict:
    """Part 3: the HalfCheetah preset (RL Zoo's settings) on each device."""
    found = {}
    for device in ("cpu", "cuda"):
        with tempfile.TemporaryDirectory() as directory:
            run_dir = Path(directory) / "run"
            command = [
                sys.executable, "-m", "rl.cli", "train", "HalfCheetah-v5", "--preset", "zoo",
                "--total-steps", str(2048 * iterations), "--set", f"device={device}",
                "--set", "eval_every=0", "--run-dir", str(run_dir), "--quiet",
            ]  # fmt: skip
            environment = dict(os.environ, OMP_NUM_THREADS="1")
            subprocess.run(command, check=True, env=environment, capture_output=True, text=True)
            lines = (run_dir / "metrics.jsonl").read_text().splitlines()
            rows = [json.loads(line) for line in lines][1:]  # the first warms up
        found[device] = {
            "update_ms": 1000 * statistics.median(r["update_time"] for r in rows),
            "rollout_ms": 1000 * statistics.median(r["rollout_time"] for r in rows),
            "steps_per_s": statistics.median(r["fps"] for r in rows),
            "last_kl": rows[-1]["kl"],
        }
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("cuda_check.py: no CUDA GPU visible to torch")
    results = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__}
    for name, part in (("agreement", agreement), ("speed", speed)):
        results[name] = part()
        print(name, json.dumps(results[name]), flush=True)
    results["training"] = training(args.iterations)
    print("training", json.dumps(results["training"]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
