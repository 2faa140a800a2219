"""Validation of the optimizer's settings: errors that name the setting, its value and the range."""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["FVP_MODES", "STEP_SCALINGS", "is_int", "is_number", "validate", "validate_solve_dtype"]

FVP_MODES = ("auto", "hessian", "ggn", "ggn-head")
STEP_SCALINGS = ("damped", "fisher")


def validate(group: dict[str, Any]) -> None:
    checks = [
        ("max_kl", group["max_kl"] > 0, "> 0"),
        ("damping", group["damping"] >= 0, ">= 0"),
        ("cg_iters", is_int(group["cg_iters"]) and group["cg_iters"] >= 1, "an integer >= 1"),
        (
            "backtrack_iters",
            is_int(group["backtrack_iters"]) and group["backtrack_iters"] >= 0,
            "an integer >= 0",
        ),
        ("backtrack_coeff", 0 < group["backtrack_coeff"] < 1, "in (0, 1)"),
        ("accept_ratio", group["accept_ratio"] >= 0, ">= 0"),
        ("fvp_subsample", 0 < group["fvp_subsample"] <= 1, "in (0, 1]"),
        ("cg_tol", group["cg_tol"] >= 0, ">= 0"),
    ]
    for name, ok, allowed in checks:
        value = group[name]
        if not is_number(value) or not ok or not math.isfinite(value):
            raise ValueError(f"Invalid {name}: {value!r} (must be {allowed})")
    if group["fvp"] not in FVP_MODES:
        raise ValueError(f"Invalid fvp: {group['fvp']!r} (must be one of {FVP_MODES})")
    if group["step_scaling"] not in STEP_SCALINGS:
        raise ValueError(
            f"Invalid step_scaling: {group['step_scaling']!r} (must be one of {STEP_SCALINGS})"
        )


def validate_solve_dtype(dtype: Any) -> None:
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(
            f"Invalid solve_dtype: {dtype!r} (must be None or a floating-point torch.dtype, "
            "e.g. torch.float32)"
        )


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
