"""The search space of ``trpo tune``: one distribution per parameter, kept as data.

The default is RL Zoo's ``sample_trpo_params`` (rl_zoo3/hyperparams_opt.py of
DLR-RM/rl-baselines3-zoo at 22e3ff2450fd92033f7f032915e1f64894a09584) in our names:

    n_steps_pow 5..12            -> steps_per_env 32..4096 (powers of two; times num_envs
                                    it is steps_per_iteration)
    batch_size_pow 2..10         -> value.minibatch_size 4..1024 (powers of two)
    one_minus_gamma 1e-4..0.03   -> gamma 0.97..0.9999 (log-uniform in 1 - gamma)
    one_minus_gae_lambda 1e-4..0.1 -> lam 0.9..0.9999 (log-uniform in 1 - lam)
    learning_rate 1e-5..2e-3 log -> value.learning_rate (sb3-contrib's TRPO: the critic's)
    n_critic_updates 5..30       -> value.epochs;   cg_max_steps 5..30 -> cg_iters
    target_kl 1e-3..0.1 log      -> max_kl 1e-3..0.3 log: our KL sums over the action
                                    dimensions where sb3-contrib's averages (rl/presets/
                                    mujoco.yaml), HalfCheetah's preset is 0.24
    net_arch small / medium      -> hidden_sizes [64, 64] / [256, 256]
    activation_fn tanh / relu    -> activation

A space file (YAML) replaces entries of the default, adds others, or removes them::

    max_kl: {low: 0.005, high: 0.5, scale: log}    # float; scale linear (default) or log
    value.epochs: {low: 5, high: 30}               # int where low and high are ints
    gamma: {low: 0.95, high: 0.9999, scale: log1m} # log-uniform in 1 - value
    steps_per_env: {low: 64, high: 2048, scale: log2}  # powers of two
    hidden_sizes: {choices: [[64, 64], [256, 256]]}
    lam: null                                      # not searched

Names are TRPOConfig fields (dotted for nested ones), ``steps_per_env``, and
``hidden_sizes`` and ``activation``, which set the policy's and the value network's alike.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
from pydantic import BaseModel

from rl.config import ConfigError, TRPOConfig, flatten_dict, merge_dicts, read_config_file

__all__ = [
    "DEFAULT_SPACE",
    "baseline_params",
    "fit_budget",
    "load_space",
    "space_fields",
    "suggest",
    "to_config",
]

DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "steps_per_env": {"low": 32, "high": 4096, "scale": "log2"},
    "value.minibatch_size": {"low": 4, "high": 1024, "scale": "log2"},
    "gamma": {"low": 0.97, "high": 0.9999, "scale": "log1m"},
    "lam": {"low": 0.9, "high": 0.9999, "scale": "log1m"},
    "value.learning_rate": {"low": 1e-5, "high": 0.002, "scale": "log"},
    "value.epochs": {"low": 5, "high": 30},
    "cg_iters": {"low": 5, "high": 30},
    "max_kl": {"low": 0.001, "high": 0.3, "scale": "log"},
    "hidden_sizes": {"choices": [[64, 64], [256, 256]]},
    "activation": {"choices": ["tanh", "relu"]},
}
SCALES = ("linear", "log", "log1m", "log2")
_SHARED = {
    "hidden_sizes": ("policy.hidden_sizes", "value.hidden_sizes"),
    "activation": ("policy.activation", "value.activation"),
    "steps_per_env": ("steps_per_iteration",),
}


# Fields that say what is run, where and how long, not how it learns: never searched.
NOT_SEARCHED = {"env_id", "env_kwargs", "total_steps", "seed", "run_dir", "device",
                "torch_threads", "vector_mode", "checkpoint_every", "eval_every",
                "eval_episodes", "eval_max_episode_steps", "episode_window"}  # fmt: skip


def _config_fields() -> list[str]:
    """Every TRPOConfig field that learning depends on, dotted for nested ones."""
    names = []
    for key, field in TRPOConfig.model_fields.items():
        if key in NOT_SEARCHED:
            continue
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            names += [f"{key}.{sub}" for sub in nested.model_fields]
        else:
            names.append(key)
    return names


def space_fields(name: str) -> tuple[str, ...]:
    """The config fields a parameter sets."""
    return _SHARED.get(name, (name,))


def load_space(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """The default space updated by the YAML file at ``path``; ConfigError naming the
    parameter for an unknown name or a malformed distribution."""
    space = dict(DEFAULT_SPACE)
    for name, spec in (read_config_file(path) if path else {}).items():
        if spec is None:
            space.pop(name, None)
        else:
            space[name] = spec
    allowed = [*_config_fields(), *_SHARED]
    for name, spec in space.items():
        where = f"search space parameter {name!r}"
        if name not in allowed:
            raise ConfigError(f"unknown {where} (allowed: {', '.join(sorted(allowed))})")
        _check_spec(where, spec)
    return space


def _check_spec(where: str, spec: Any) -> None:
    if not isinstance(spec, dict) or not (set(spec) <= {"low", "high", "scale", "choices"}):
        raise ConfigError(f"{where}: {spec!r} must be {{low, high[, scale]}} or {{choices}}")
    if "choices" in spec:
        if set(spec) != {"choices"} or not isinstance(spec["choices"], list) or not spec["choices"]:
            raise ConfigError(f"{where}: choices must be a non-empty list, alone")
        return
    low, high, scale = spec.get("low"), spec.get("high"), spec.get("scale", "linear")
    numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (low, high))
    if not numbers or not low < high:
        raise ConfigError(f"{where}: low = {low!r}, high = {high!r}: two numbers, low < high")
    if scale not in SCALES:
        raise ConfigError(f"{where}: scale = {scale!r} (allowed: {', '.join(SCALES)})")
    if (scale in ("log", "log2") and low <= 0) or (scale == "log1m" and high >= 1):
        raise ConfigError(f"{where}: low = {low!r}, high = {high!r} out of range for {scale}")


def fit_budget(
    space: dict[str, dict[str, Any]], budget: int, num_envs: int
) -> dict[str, dict[str, Any]]:
    """``space`` with ``steps_per_env`` cut to iterations that fit in ``budget`` env steps;
    ConfigError naming ``--budget`` when none does."""
    spec = space.get("steps_per_env")
    if spec is None:
        return space
    choices = spec.get("choices", [])
    fitting = [choice for choice in choices if choice * num_envs <= budget]
    if "choices" in spec and fitting:
        return {**space, "steps_per_env": {"choices": fitting}}
    if "choices" not in spec and spec["low"] * num_envs <= budget:
        high = min(spec["high"], budget // num_envs)
        if spec.get("scale") == "log2":
            high = 2 ** math.floor(math.log2(high))
        return {**space, "steps_per_env": {**spec, "high": high}}
    least = min(choices) if choices else spec["low"]
    raise ConfigError(
        f"--budget {budget} is smaller than one iteration (the search space's least "
        f"steps_per_env {least} x num_envs {num_envs} = {least * num_envs} steps)"
    )


def suggest(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One value per parameter, drawn by ``trial``'s sampler."""
    values = {}
    for name, spec in space.items():
        key = _param_name(name, spec)
        if "choices" in spec:
            encoded = [_encode(choice) for choice in spec["choices"]]
            values[name] = spec["choices"][encoded.index(trial.suggest_categorical(key, encoded))]
            continue
        low, high, scale = spec["low"], spec["high"], spec.get("scale", "linear")
        integer = isinstance(low, int) and isinstance(high, int)
        if scale == "log2":
            values[name] = 2 ** trial.suggest_int(key, *_log2_range(low, high))
        elif scale == "log1m":
            values[name] = 1 - trial.suggest_float(key, 1 - high, 1 - low, log=True)
        elif integer:
            values[name] = trial.suggest_int(key, low, high, log=scale == "log")
        else:
            values[name] = trial.suggest_float(key, low, high, log=scale == "log")
    return values


def baseline_params(
    space: dict[str, dict[str, Any]], base: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The Optuna parameters (as ``suggest`` names and encodes them) that reproduce the
    ``base`` config's own values: a study's first trial, its starting point measured on
    the study's seeds and budget; and, for each parameter whose base value the space does
    not hold (out of range, not a power of two, another choice, policy and value networks
    that differ), left for the sampler to draw, why."""
    flat, params, left = flatten_dict(base), {}, []
    for name, spec in space.items():
        value, *others = (flat.get(field) for field in space_fields(name))
        if any(other != value for other in others):
            left.append(f"{name} (the policy's and the value's differ: {value}, {others[0]})")
            continue
        if name == "steps_per_env":
            value, rest = divmod(value, base["num_envs"])
            if rest:
                left.append(f"{name} (steps_per_iteration is not a multiple of num_envs)")
                continue
        key = _param_name(name, spec)
        scale = spec.get("scale", "linear")
        if "choices" in spec:
            if value in spec["choices"]:
                params[key] = _encode(value)
            else:
                left.append(f"{name} (its {value} is not one of {spec['choices']})")
        elif not (isinstance(value, (int, float)) and spec["low"] <= value <= spec["high"]):
            left.append(f"{name} (its {value} is outside {spec['low']} to {spec['high']})")
        elif scale != "log2":
            params[key] = 1 - value if scale == "log1m" else value
        elif math.log2(value).is_integer():
            params[key] = int(math.log2(value))
        else:
            left.append(f"{name} (its {value} is not a power of two)")
    return params, left


def _param_name(name: str, spec: dict[str, Any]) -> str:
    """The Optuna parameter of a space entry: its name, or its transform's for log2/log1m."""
    return {"log2": f"log2({name})", "log1m": f"1-{name}"}.get(spec.get("scale", ""), name)


def _encode(choice: Any) -> Any:
    """A categorical choice as Optuna stores it (lists and dicts as JSON)."""
    return json.dumps(choice) if isinstance(choice, (list, dict)) else choice


def _log2_range(low: float, high: float) -> tuple[int, int]:
    return math.ceil(math.log2(low)), math.floor(math.log2(high))


def to_config(values: dict[str, Any], num_envs: int) -> dict[str, Any]:
    """Sampled parameter values as nested config data (``steps_per_env`` x ``num_envs``)."""
    data: dict[str, Any] = {}
    envs = values.get("num_envs", num_envs)
    for name, value in values.items():
        for field in space_fields(name):
            setting = value * envs if name == "steps_per_env" else value
            for part in reversed(field.split(".")):
                setting = {part: setting}
            data = merge_dicts(data, setting)
    return data
