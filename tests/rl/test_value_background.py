"""The value fit in a background thread gives bit for bit the rows of the serial update."""

import json
from pathlib import Path

import pytest

import rl

IGNORED = {"time", "fps", "rollout_time", "update_time"}


def rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in IGNORED} for line in lines]


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


def test_an_error_in_the_background_fit_reaches_the_caller() -> None:
    from rl.value import BackgroundCall

    def fail() -> None:
        raise RuntimeError("value fit failed")

    call = BackgroundCall(fail)
    with pytest.raises(RuntimeError, match="value fit failed"):
        call.result()


def test_background_calls_run_in_order_on_one_kept_thread() -> None:
    import threading

    from rl.value import BackgroundCall

    threads, order = [], []

    def job(k: int) -> int:
        threads.append(threading.current_thread())
        order.append(k)
        return k * k

    calls = [BackgroundCall(job, k) for k in range(5)]
    assert [call.result() for call in calls] == [0, 1, 4, 9, 16]
    assert order == [0, 1, 2, 3, 4]
    assert len(set(threads)) == 1 and threads[0] is not threading.current_thread()
    assert BackgroundCall(job, 7).result() == 49 and threads[-1] is threads[0]
