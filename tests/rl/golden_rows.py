"""Reference metrics rows for fixed seeds: what is learned must not change in a refactor.

``python -m tests.rl.golden_rows --write`` (from the project root) runs each case below
with the code checked out and writes its rows, timings dropped, to
tests/rl/data/golden_rows.json; tests/rl/test_golden_rows.py runs the cases again and
compares. Rows were written at commit ff862d9 (before the rl/ redesign of issue 13); a
change that alters them changes what is learned and must say so and rewrite them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import rows

DATA = Path(__file__).parent / "data" / "golden_rows.json"
# RL Zoo's settings (``--preset zoo``): fixed, whatever tuned presets become the defaults
CASES: dict[str, list[str]] = {
    "cartpole": ["CartPole-v1", "--preset", "zoo", "--seed", "3", "--total-steps", "{steps}",
                 "--set", "steps_per_iteration=512"],
    "pendulum-normalized": [
        "Pendulum-v1", "--preset", "zoo", "--seed", "5", "--total-steps", "{steps}",
        "--set", "steps_per_iteration=512", "--set", "normalize_observations=true",
        "--set", "normalize_rewards=true", "--set", "eval_every=2048",
        "--set", "eval_episodes=2", "--set", "checkpoint_every=2",
    ],
    "halfcheetah": ["HalfCheetah-v5", "--preset", "zoo", "--seed", "1", "--total-steps", "{steps}",
                    "--set", "steps_per_iteration=512"],
}  # fmt: skip
ITERATIONS = {"cartpole": 8, "pendulum-normalized": 8, "halfcheetah": 20}
PER_RANK_STEPS = 512


def run_case(case: str, world_size: int, run_dir: Path) -> dict[str, list[dict]]:
    """Train ``case`` on ``world_size`` ranks into ``run_dir``; its metrics and evals rows."""
    steps = ITERATIONS[case] * PER_RANK_STEPS * world_size
    args = [a.format(steps=steps) for a in CASES[case]]
    args += ["--run-dir", str(run_dir), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if world_size == 1:
        command = [sys.executable, "-m", "rl.cli", "train", *args]
    else:
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={world_size}", "-m", "rl.train", *args,
        ]  # fmt: skip
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=600)
    evals = run_dir / "evals.jsonl"
    return {
        "metrics": rows(run_dir),
        "evals": rows(run_dir, "evals.jsonl") if evals.exists() else [],
    }


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        for case in CASES:
            for world_size in (1, 2):
                key = f"{case}/{world_size}"
                results[key] = run_case(case, world_size, Path(directory) / key.replace("/", "-"))
                print(key, len(results[key]["metrics"]), "rows", flush=True)
    if "--write" in sys.argv:
        DATA.write_text(json.dumps(results, indent=1) + "\n")
    else:
        print(json.dumps(results)[:2000])


if __name__ == "__main__":
    main()
