"""A tuned config on seeds its study never saw, against RL Zoo's preset: the issue's rule for
adopting a tuned preset (1M steps, 5 held-out seeds, deterministic evaluation of 10 episodes
at 100k, 300k and 1M).

    python benchmarks/heldout.py STUDY_DIR [--seeds 5] [--first-seed 0] [--steps 1000000]
        [--jobs 2] [--out DIR] [--zoo | --variants tuned zoo] [--set KEY=VALUE ...]

Trains ``STUDY_DIR/best.yaml`` ("tuned"; "zoo": ``--preset zoo`` for the same env, on the
same seeds) with ``trpo train`` on the first ``--seeds`` seeds from ``--first-seed`` on that
are not in the study's ``seeds_used``, ``--jobs`` runs at a time (one torch thread each),
into ``--out`` (default ``STUDY_DIR/heldout``); a run already finished there is not trained
again. ``--set`` goes to every run (``value_fit_in_background=false``: one core per run, the
same numbers). Prints the deterministic evaluation return at each checkpoint step, per seed
and mean.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

CHECKPOINTS = (100_000, 300_000, 1_000_000)


def tuning_seeds(study_dir: Path) -> list[int]:
    """The seeds the study trained on (best.yaml's header names them)."""
    for line in (study_dir / "best.yaml").read_text().splitlines():
        if line.startswith("# seeds used while tuning:"):
            return json.loads(line.split(":", 1)[1].split("(")[0])
    raise SystemExit(f"{study_dir}/best.yaml does not name its tuning seeds")


def train(command: list[str], run_dir: Path) -> None:
    if (run_dir / "model.pt").is_file():
        return  # finished before: kept
    environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(run_dir.with_suffix(".log"), "w") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=environment, check=True)


def returns_at(run_dir: Path, steps: int) -> float | None:
    """The evaluation return at the first evaluation at or after ``steps``."""
    lines = (run_dir / "evals.jsonl").read_text().splitlines() if run_dir.exists() else []
    for row in map(json.loads, lines):
        if row["step"] >= steps:
            return float(row["mean_return"])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--zoo", action="store_true", help="also RL Zoo's preset")
    parser.add_argument("--variants", nargs="+", choices=("tuned", "zoo"), default=None)
    parser.add_argument("--set", nargs="*", default=[], help="KEY=VALUE for every run")
    args = parser.parse_args()
    best = args.study_dir / "best.yaml"
    env_id = yaml.safe_load(best.read_text())["env_id"]
    used = set(tuning_seeds(args.study_dir))
    candidates = range(args.first_seed, args.first_seed + args.seeds + len(used))
    seeds = [seed for seed in candidates if seed not in used][: args.seeds]
    out = args.out or args.study_dir / "heldout"
    out.mkdir(parents=True, exist_ok=True)
    chosen = args.variants or (["tuned", "zoo"] if args.zoo else ["tuned"])
    targets = {"tuned": [str(best)], "zoo": [env_id, "--preset", "zoo"]}
    variants = {name: targets[name] for name in chosen}
    jobs = []
    for name, target in variants.items():
        for seed in seeds:
            run_dir = out / f"{name}-seed{seed}"
            command = [
                sys.executable, "-m", "rl.cli", "train", *target, "--seed", str(seed),
                "--total-steps", str(args.steps), "--run-dir", str(run_dir), "--quiet",
                "--set", "eval_every=100000", "--set", "eval_episodes=10",
                *(item for pair in args.set for item in ("--set", pair)),
            ]  # fmt: skip
            jobs.append((command, run_dir))
    with ThreadPoolExecutor(args.jobs) as pool:
        for future in [pool.submit(train, command, run_dir) for command, run_dir in jobs]:
            future.result()
    print(f"{env_id}, held-out seeds {seeds} (tuning seeds {sorted(used)}):")
    for name in variants:
        for steps in (s for s in CHECKPOINTS if s <= args.steps):
            found = [returns_at(out / f"{name}-seed{seed}", steps) for seed in seeds]
            values = [value for value in found if value is not None]
            mean = f"{statistics.fmean(values):,.0f}" if values else "-"
            shown = ", ".join("-" if v is None else f"{v:,.0f}" for v in found)
            print(f"  {name:5s} {steps:>9,d}: {shown}  mean {mean}")


if __name__ == "__main__":
    main()
