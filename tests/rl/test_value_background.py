"""The value fit in the value-fit process gives bit for bit the rows of the serial update."""

from pathlib import Path

import pytest

import rl
from tests.conftest import rows


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_background_value_fit_changes_nothing_but_time(tmp_path: Path, env_id: str) -> None:
    results = []
    for background in (True, False):
        run_dir = tmp_path / str(background)
        config = rl.TRPOConfig(
            env_id=env_id, total_steps=2048, steps_per_iteration=512, seed=3,
            normalize_observations=True, value_fit_in_background=background,
            run_dir=str(run_dir),
        )  # fmt: skip
        rl.TRPO(config).learn(progress="none")
        results.append(rows(run_dir))
    assert len(results[0]) == 4
    assert results[0] == results[1]
