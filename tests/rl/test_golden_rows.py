"""What is learned for fixed seeds, one and two ranks, against rows written before the rl/
redesign (tests/rl/golden_rows.py): CartPole, Pendulum with both normalizations, an
evaluation every 4 iterations and a checkpoint every 2, and 20 HalfCheetah iterations.

Integers and flags must match exactly; floats to 1e-6 relative (the same code on this kind
of machine gives them bit for bit; a change in what is learned moves them by far more
within a few iterations).
"""

from __future__ import annotations

import json
import math
import os

import pytest

from tests.rl.golden_rows import CASES, DATA, run_case

EXACT = os.environ.get("GOLDEN_EXACT") == "1"  # bit for bit, for checks on one machine


def same(expected, actual) -> bool:
    if isinstance(expected, float) and isinstance(actual, float) and not EXACT:
        if math.isnan(expected):
            return math.isnan(actual)
        return math.isclose(expected, actual, rel_tol=1e-6, abs_tol=1e-9)
    return expected == actual


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_rows_are_those_before_the_redesign(case, world_size, tmp_path):
    expected = json.loads(DATA.read_text())[f"{case}/{world_size}"]
    actual = run_case(case, world_size, tmp_path / "run")
    for kind in ("metrics", "evals"):
        assert len(actual[kind]) == len(expected[kind]), kind
        for index, (want, got) in enumerate(zip(expected[kind], actual[kind], strict=True)):
            assert want.keys() == got.keys(), (kind, index)
            different = {k: (want[k], got[k]) for k in want if not same(want[k], got[k])}
            assert not different, f"{kind} row {index}: {different}"
