"""The value fit running beside the next rollout (TRPO.learn): same numbers, rows in order."""

from __future__ import annotations

import json

import rl
import rl.loop
from rl.progress import Progress
from rl.value_process import can_fit_in_process

TIMING = ("fps", "time")  # keys holding these vary between runs


class Recorder(Progress):
    """Keeps each row with the number of rollouts collected when it was shown."""

    def __init__(self, total_steps: int, rollouts: list[int]) -> None:
        super().__init__(total_steps)
        self.rollouts = rollouts
        self.rows: list[dict] = []
        self.shown_at: list[int] = []

    def iteration(self, row: dict) -> None:
        self.rows.append(dict(row))
        self.shown_at.append(len(self.rollouts))


def learned(tmp_path, monkeypatch, name: str, **settings):
    rollouts: list[int] = []
    collect = rl.loop.collect
    monkeypatch.setattr(rl.loop, "collect", lambda *a: rollouts.append(1) or collect(*a))
    config = rl.TRPOConfig(
        env_id="CartPole-v1", total_steps=12 * 256, steps_per_iteration=256, seed=7,
        checkpoint_every=5, run_dir=str(tmp_path / name), **settings,
    )  # fmt: skip
    agent = rl.TRPO(config)
    recorder = Recorder(config.total_steps, rollouts)
    agent.learn(progress=recorder)
    return agent, recorder


def plain(row: dict) -> dict:
    return {k: v for k, v in row.items() if not any(word in k for word in TIMING)}


def test_value_fit_beside_the_rollout_learns_the_same_and_writes_every_row(
    tmp_path, monkeypatch
) -> None:
    overlapped, shown = learned(tmp_path, monkeypatch, "overlap")
    assert can_fit_in_process(overlapped.value, overlapped.value_optimizer)
    serial, reference = learned(tmp_path, monkeypatch, "serial", value_fit_in_background=False)

    assert [plain(r) for r in shown.rows] == [plain(r) for r in reference.rows]
    assert all(isinstance(r["value_loss"], float) for r in shown.rows)
    for a, b in zip(overlapped.value.parameters(), serial.value.parameters(), strict=True):
        assert a.equal(b)
    # Rows of fits that ran beside the next rollout are shown after it, with the
    # checkpoints of iterations 5 and 10 (their envs captured before it); the last at once.
    iterations = [r["iteration"] for r in shown.rows]
    assert iterations == list(range(1, 13))
    late = [i for i, at in zip(iterations, shown.shown_at, strict=True) if at == i + 1]
    assert late == list(range(1, 12))
    assert reference.shown_at == iterations
    written = (tmp_path / "overlap" / "metrics.jsonl").read_text().splitlines()
    assert [plain(json.loads(line)) for line in written] == [plain(r) for r in reference.rows]


def test_a_callback_sees_each_iteration_with_its_value_fit_done(tmp_path) -> None:
    config = rl.TRPOConfig(
        env_id="CartPole-v1", total_steps=4 * 256, steps_per_iteration=256, seed=7
    )
    agent = rl.TRPO(config)
    seen = []
    agent.learn(
        progress="none",
        callback=lambda a, row: seen.append((a.iteration, row["iteration"], row["value_loss"])),
    )
    assert [(a, b) for a, b, _ in seen] == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert all(isinstance(loss, float) for _, _, loss in seen)


class StopAtEvaluation(Progress):
    """Raises from ``evaluation`` at ``step``, as ``trpo tune``'s pruning reporter does."""

    def __init__(self, total_steps: int, step: int) -> None:
        super().__init__(total_steps)
        self.step, self.shown = step, []

    def evaluation(self, row: dict) -> None:
        self.shown.append(row["step"])
        if row["step"] == self.step:
            raise KeyboardInterrupt  # any exception; this one also passes `except Exception`


def test_an_error_from_the_display_writes_each_row_and_evaluation_once(tmp_path) -> None:
    config = rl.TRPOConfig(
        env_id="CartPole-v1", total_steps=8 * 256, steps_per_iteration=256, seed=7,
        eval_every=512, eval_episodes=1, run_dir=str(tmp_path / "run"),
    )  # fmt: skip
    agent = rl.TRPO(config)
    display = StopAtEvaluation(config.total_steps, 1024)
    try:
        agent.learn(progress=display)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the display's exception did not stop learn")
    finally:
        agent.close()
    # the evaluation at 1,024 was shown once the next rollout had run (its fit beside it)
    assert display.shown == [512, 1024]
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    evals = [json.loads(line) for line in (tmp_path / "run" / "evals.jsonl").open()]
    assert [row["iteration"] for row in metrics] == [1, 2, 3, 4]
    assert [row["step"] for row in evals] == [512, 1024]
