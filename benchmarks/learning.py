"""Learning benchmark: final deterministic return at 1M steps, ours against sb3-contrib.

Each (library, task, seed) run is a subprocess (benchmarks/_ours_runner.py or
_sb3_runner.py) with RL Zoo's MuJoCo TRPO settings, evaluated deterministically (10 episodes)
every 50k steps and at the end. Results go to RESULTS_DIR/<library>/<task>/seed<k>/
(evals.jsonl, result.json); the summary gives each task's mean with a bootstrap 95%
interval and the aggregate: the mean over tasks of (our mean / sb3's mean).

    python benchmarks/learning.py --jobs 2                      # everything (hours)
    python benchmarks/learning.py --libraries ours --seeds 0 1 2
    python benchmarks/learning.py --summary-only                # re-print from results
    trpo plot results/learning/ours/HalfCheetah-v5/seed*        # the curves

`--sb3-anchor` uses the sb3-contrib per-seed returns measured on this kind of machine
(shared/ANCHORS.md: seeds 0-2; on CPU a run is deterministic) instead of re-running sb3.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TASKS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5")
# sb3-contrib 2.9.2, RL Zoo settings, deterministic eval of 10 episodes after 1M steps,
# measured on a 2-core machine like ours (shared/ANCHORS.md).
SB3_ANCHOR = {
    "HalfCheetah-v5": {0: 3642.0, 1: 4596.0, 2: 1632.0},
    "Hopper-v5": {0: 3493.0, 1: 702.0, 2: 1286.0},
    "Walker2d-v5": {0: 4999.0, 1: 4183.0, 2: 5004.0},
}


def run_one(library: str, task: str, seed: int, steps: int, out: Path) -> dict:
    run_dir = out / library / task / f"seed{seed}"
    result_file = run_dir / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    common = ["--env", task, "--steps", str(steps), "--seed", str(seed),
              "--eval-every", "50000", "--eval-episodes", "10"]  # fmt: skip
    if library == "ours":
        command = [sys.executable, str(HERE / "_ours_runner.py"), *common, "--run-dir",
                   str(run_dir)]  # fmt: skip
    else:
        command = [sys.executable, str(HERE / "_sb3_runner.py"), *common, "--out",
                   str(run_dir / "evals.jsonl")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result_file.write_text(json.dumps(result))
    print(f"{library} {task} seed {seed}: return {result['final_return']:.0f}, "
          f"{result['wall_s']:.0f} s", flush=True)  # fmt: skip
    return result


def bootstrap_interval(values: list[float], rounds: int = 10_000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    samples = rng.choice(np.asarray(values), size=(rounds, len(values)), replace=True)
    means = samples.mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def collect(out: Path, library: str, task: str) -> dict[int, float]:
    returns = {}
    for result_file in sorted((out / library / task).glob("seed*/result.json")):
        result = json.loads(result_file.read_text())
        returns[int(result["seed"])] = float(result["final_return"])
    return returns


def summary(out: Path, tasks: list[str], sb3_anchor: bool) -> str:
    lines = ["| task | ours: mean [95% CI] (per seed) | sb3-contrib: mean [95% CI] (per seed) "
             "| ratio |", "|---|---|---|---|"]  # fmt: skip
    ratios = []
    for task in tasks:
        ours = collect(out, "ours", task)
        sb3 = SB3_ANCHOR[task] if sb3_anchor else collect(out, "sb3", task)
        cells = []
        for returns in (ours, sb3):
            if not returns:
                cells.append("-")
                continue
            values = [returns[k] for k in sorted(returns)]
            low, high = bootstrap_interval(values)
            seeds = " / ".join(f"{v:,.0f}" for v in values)
            cells.append(f"{np.mean(values):,.0f} [{low:,.0f}, {high:,.0f}] ({seeds})")
        ratio = np.mean(list(ours.values())) / np.mean(list(sb3.values())) if ours and sb3 else None
        if ratio is not None:
            ratios.append(ratio)
        lines.append(f"| {task} | {cells[0]} | {cells[1]} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}'} |")  # fmt: skip
    if ratios:
        lines.append(f"\naggregate (mean over tasks of ours/sb3): {np.mean(ratios):.2f}; "
                     f"lowest task ratio {min(ratios):.2f}")  # fmt: skip
    if sb3_anchor:
        lines.append("sb3-contrib figures: shared/ANCHORS.md (same settings, same kind of machine)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--libraries", nargs="+", default=["ours", "sb3"])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--out", type=Path, default=Path("results/learning"))
    parser.add_argument("--sb3-anchor", action="store_true")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    if not args.summary_only:
        jobs = [(lib, task, seed) for seed in args.seeds for task in args.tasks
                for lib in args.libraries]  # fmt: skip
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for future in [pool.submit(run_one, *job, args.steps, args.out) for job in jobs]:
                future.result()
    print(summary(args.out, args.tasks, args.sb3_anchor))


if __name__ == "__main__":
    main()
