"""examples/transformer_kl_finetune.py (quick mode): every step inside max_kl, objective down."""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
KL_RELATIVE_SLACK = 1e-6  # the optimizer's rounding allowance


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@cache
def run_example(name: str, *argv: str) -> Any:
    return load_example(name).main(["--quick", *argv])


def assert_every_step_within_max_kl_and_improving(run: Any, max_kl: float) -> None:
    """Each step accepted, its KL (measured after the step) in (0, max_kl], its batch's
    objective lowered."""
    for record in run.steps:
        assert record.accepted
        assert 0.0 < record.step_kl <= max_kl * (1 + KL_RELATIVE_SLACK)
        assert record.objective_after < record.objective_before
        assert record.step_seconds > 0.0 and record.adam_seconds > 0.0


@pytest.mark.parametrize("seed", ["0", "1"])
def test_every_transformer_step_stays_within_max_kl_and_lowers_the_objective(seed) -> None:
    run = run_example("transformer_kl_finetune", "--seed", seed)
    assert len(run.steps) == 6
    assert_every_step_within_max_kl_and_improving(run, 0.01)
    # Measured (seed 0): held-out 1.090 -> 0.870 nats/char over 6 steps.
    assert run.eval_objective_end < run.eval_objective_start - 0.1


def test_a_tighter_max_kl_takes_smaller_steps() -> None:
    tight = run_example("transformer_kl_finetune", "--max-kl", "0.002")
    assert_every_step_within_max_kl_and_improving(tight, 0.002)
    loose = run_example("transformer_kl_finetune", "--seed", "0")
    assert tight.eval_objective_end > loose.eval_objective_end


def test_the_zen_of_python_is_read_without_printing(capsys) -> None:
    example = load_example("transformer_kl_finetune")
    text = example.zen_of_python()
    assert text.startswith("The Zen of Python") and "Beautiful is better than ugly." in text
    assert "Beautiful was better than ugly." in example.past_tense(text)
    assert capsys.readouterr().out == ""
