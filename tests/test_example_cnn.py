"""examples/cnn_kl_update.py (quick mode): every step inside max_kl, the shifted images learnt."""

from __future__ import annotations

import pytest
import torch
from test_example_transformer import (
    assert_every_step_within_max_kl_and_improving,
    load_example,
    run_example,
)


@pytest.mark.parametrize("seed", ["0", "1"])
def test_every_cnn_step_stays_within_max_kl_and_lowers_the_objective(seed) -> None:
    run = run_example("cnn_kl_update", "--seed", seed)
    assert len(run.steps) == 6
    assert_every_step_within_max_kl_and_improving(run, 0.02)
    # Measured (seed 0): held-out 1.976 -> 0.517 over 6 steps.
    assert run.eval_objective_end < 0.5 * run.eval_objective_start


def test_generated_images_draw_the_class_as_the_bar_angle() -> None:
    example = load_example("cnn_kl_update")
    images, labels = example.bar_images(example.ORIGINAL, 256, torch.Generator().manual_seed(0))
    assert images.shape == (256, 1, example.SIZE, example.SIZE)
    assert set(labels.tolist()) == set(range(example.CLASSES))
    horizontal = images[labels == 0, 0].mean(0)  # a horizontal bar: energy spread along rows
    vertical = images[labels == 2, 0].mean(0)
    assert horizontal.std(dim=1).mean() < horizontal.std(dim=0).mean()
    assert vertical.std(dim=0).mean() < vertical.std(dim=1).mean()
