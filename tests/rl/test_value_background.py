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


def test_a_batch_too_large_for_shared_memory_is_fitted_in_a_thread_alike(
    tmp_path: Path, monkeypatch
) -> None:
    """Batches over rl.value_process.MAX_SHARED_BYTES (Atari frames) are fitted in a thread
    of the training process beside the policy step: the same rows."""
    import rl.loop

    results = []
    for limit in (0, None):
        if limit is not None:
            monkeypatch.setattr(rl.loop, "MAX_SHARED_BYTES", limit)
        run_dir = tmp_path / str(limit)
        config = rl.TRPOConfig(
            env_id="Pendulum-v1", total_steps=1024, steps_per_iteration=256, seed=4,
            value_fit_in_background=limit is not None, run_dir=str(run_dir),
        )  # fmt: skip
        rl.TRPO(config).learn(progress="none")
        results.append(rows(run_dir))
    assert len(results[0]) == 4
    assert results[0] == results[1]
