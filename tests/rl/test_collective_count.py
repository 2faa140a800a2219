"""Collectives of a short 2-rank gloo job, counted by benchmarks/collectives.py: the
communication model of docs/distributed.md holds exactly, and the collectives besides the
CG products and line-search candidates stay at their packed count (before packing, this
Pendulum job issued 22.2 collectives per iteration, 17.2 of them besides those)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASE = ["--env", "Pendulum-v1", "--ranks", "2", "--iterations", "4",
        "--set", "steps_per_iteration=512"]  # fmt: skip
CASES = {
    # ggn-head, both normalizations: the step's first all-reduce, gradient and A together,
    # the Schur right-hand side and the coupling; standardize, value gather, end of iteration
    "head, normalized": ["--set", "normalize_observations=true", "--set", "normalize_rewards=true"],
    # plain CG on GGN products, no advantage standardisation (the fit gathers sizes itself)
    "ggn, raw advantages": ["--set", "fvp=ggn", "--set", "normalize_advantages=false"],
}
# per iteration, besides CG products and line-search candidates: 4 + 3 (ggn-head), 2 + 3
# (ggn), plus the value checksum of iteration 1 and the last stop check (0.5 over 4)
FIXED_PER_ITERATION = {"head, normalized": 7.5, "ggn, raw advantages": 6.5}


def count(tmp_path: Path, extra: list[str]) -> dict:
    out = tmp_path / "counts.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "collectives.py"), *BASE, *extra,
         "--json", str(out)], check=True, env=env, capture_output=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    return json.loads(out.read_text())


@pytest.mark.parametrize("case", list(CASES))
def test_a_two_rank_job_issues_the_collectives_of_the_communication_model(case, tmp_path):
    run = count(tmp_path, CASES[case])
    assert run["measured"] == run["model"]
    head = run["steps"][0]["fvp"] == "ggn-head"
    assert head == (case == "head, normalized")
    products = sum((2 * s["cg"] if head else s["cg"]) + s["candidates"] for s in run["steps"])
    fixed = (run["measured"]["collectives"] - products) / run["iterations"]
    assert fixed <= FIXED_PER_ITERATION[case]
    assert not any("object" in key for key in run["counts"]), run["counts"]
