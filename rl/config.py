"""TRPOConfig: every setting of a run, validated, frozen, loadable from YAML, TOML or JSON
(derived sizes are properties, never written back)."""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rl.atari import AtariConfig
from rl.errors import first_line
from rl.presets import find_preset

__all__ = ["AtariConfig", "ConfigError", "PolicyConfig", "TRPOConfig", "ValueConfig",
           "describe_validation_error", "flatten_dict", "merge_dicts",
           "parse_overrides"]  # fmt: skip

Activation = Literal["tanh", "relu", "elu", "gelu", "silu"]
HiddenSizes = tuple[Annotated[int, Field(ge=1, le=65536)], ...]

if int(pydantic.VERSION.split(".")[0]) < 2:  # pragma: no cover
    raise ImportError(f'rl needs pydantic >= 2 (pip install -e ".[rl]"), found {pydantic.VERSION}')


class ConfigError(ValueError):
    """A config that cannot be built; the message is one line naming the field and the value."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class PolicyConfig(_Frozen):
    """The policy network: an MLP whose output parameterises the action distribution."""

    hidden_sizes: HiddenSizes = Field(
        (64, 64), description="Widths of the hidden layers; () gives a linear policy."
    )
    activation: Activation = Field("tanh", description="Activation between hidden layers.")
    log_std_init: float = Field(
        0.0, ge=-5.0, le=2.0, description="Initial log standard deviation of Gaussian policies."
    )
    ortho_init: bool = Field(
        True,
        description="Orthogonal initialisation (gain √2, output layer 0.01), as SB3 does.",
    )


class ValueConfig(_Frozen):
    """The value network and its minibatch Adam fit, run once per iteration."""

    hidden_sizes: HiddenSizes = Field((64, 64), description="Widths of the hidden layers.")
    activation: Activation = Field("tanh", description="Activation between hidden layers.")
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0, description="Adam learning rate.")
    epochs: int = Field(10, ge=1, le=1000, description="Passes over the batch per iteration.")
    minibatch_size: int = Field(128, ge=1, le=1_000_000, description="Samples per Adam step.")
    distributed_fit: Literal["auto", "all_reduce", "replicate"] = Field(
        "auto",
        description="How the ranks of a torchrun job fit the value function: 'all_reduce' "
        "averages each minibatch's gradient over the ranks (one all-reduce per Adam step, "
        "each rank's minibatch_size samples); 'replicate' gathers the job's batch once per "
        "iteration and every rank takes the same Adam steps on all of it (minibatches of "
        "ranks x minibatch_size samples); 'auto' replicates on gloo (CPU), where one "
        "all-reduce costs about a millisecond, and all-reduces on NCCL.",
    )


class TRPOConfig(_Frozen):
    """All settings of a TRPO run. Defaults follow the seed project (max_kl 0.01, γ 0.99,
    λ 0.95, 10 CG iterations, 10 backtracks, damping 0.1, 64×64 networks)."""

    env_id: str | None = Field(
        None,
        min_length=1,
        description="Gymnasium environment id; may be omitted when rl.TRPO gets an env factory.",
    )
    env_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments passed to gymnasium.make."
    )
    total_steps: int = Field(
        1_000_000,
        ge=1,
        description="Env steps to train for, rounded up to whole iterations.",
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of networks, sampling and envs.")
    num_envs: int = Field(2, ge=1, le=1024, description="Environments stepped together.")
    vector_mode: Literal["sync", "async"] = Field(
        "sync", description="gymnasium SyncVectorEnv (one process) or AsyncVectorEnv."
    )
    steps_per_iteration: int = Field(
        2048,
        ge=1,
        le=100_000_000,  # the rollout buffer is allocated up front: ~100M transitions at most
        description="Transitions collected per iteration, summed over envs; divisible by num_envs.",
    )
    policy: PolicyConfig = Field(default_factory=PolicyConfig, description="Policy network.")
    value: ValueConfig = Field(default_factory=ValueConfig, description="Value network and fit.")
    atari: AtariConfig = Field(
        default_factory=AtariConfig, description="ALE (Atari) preprocessing; ignored for others."
    )
    max_kl: float = Field(
        0.01,
        ge=1e-6,
        le=10.0,
        description="Trust-region radius: mean KL. At least 1e-6: below, the KL measured in "
        "float32 is rounding noise and the line search would accept or refuse at random.",
    )
    damping: float = Field(0.1, ge=0.0, le=1e3, description="Damping added to the Fisher matrix.")
    cg_iters: int = Field(10, ge=1, le=1000, description="Conjugate-gradient iterations.")
    backtrack_iters: int = Field(10, ge=0, le=100, description="Line-search backtracking steps.")
    backtrack_coeff: float = Field(
        0.8, gt=0.0, lt=1.0, description="Step shrink factor per backtrack."
    )
    accept_ratio: float = Field(
        0.1, ge=0.0, le=1.0, description="Least actual/expected improvement accepted."
    )
    fvp: Literal["auto", "hessian", "ggn", "ggn-head"] = Field(
        "auto",
        description="How TrustRegionOptimizer solves the step: 'hessian' (CG on double-backward "
        "KL products), 'ggn' (CG on Gauss-Newton products), 'ggn-head' (Gaussian MLP policies: "
        "output layer and log-std solved exactly, CG on the rest; cg_iters then counts its "
        "iterations), 'auto' (ggn-head where it applies, else ggn). All solve the same damped "
        "system; at the presets' 25 iterations they take the same step to a cosine of 0.9996 "
        "(docs/learning_ablation.md).",
    )
    step_scaling: Literal["damped", "fisher"] = Field(
        "damped",
        description="What max_kl bounds in the step's quadratic model: 'damped' scales with "
        "sᵀ(F + damping)s, as TRPO's reference implementations do (the KL reached is then below "
        "max_kl); 'fisher' with sᵀFs, so the predicted KL is max_kl.",
    )
    fvp_subsample: float = Field(
        1.0, gt=0.0, le=1.0, description="Fraction of the batch used for Fisher-vector products."
    )
    gamma: float = Field(0.99, ge=0.0, le=1.0, description="Discount factor γ.")
    lam: float = Field(0.95, ge=0.0, le=1.0, description="GAE λ.")
    normalize_advantages: bool = Field(True, description="Standardise advantages per batch.")
    normalize_observations: bool = Field(
        False, description="gymnasium NormalizeObservation; statistics frozen for evaluation."
    )
    normalize_rewards: bool = Field(
        False, description="gymnasium NormalizeReward (scales by the discounted-return std)."
    )
    eval_every: int = Field(
        0, ge=0, description="Env steps between deterministic evaluations; 0 = none."
    )
    eval_episodes: int = Field(10, ge=1, le=10_000, description="Episodes per evaluation.")
    eval_max_episode_steps: int | None = Field(
        None,
        ge=1,
        description="Steps after which an evaluation episode is cut (its return so far "
        "counts); default: the env's time limit, else 10,000, so that an evaluation ends "
        "even without a time limit.",
    )
    episode_window: int = Field(
        100, ge=1, le=100_000, description="Recent training episodes averaged in metrics."
    )
    value_fit_in_background: bool = Field(
        True,
        description="Fit the value function in a child process (rl.value_process) while the "
        "policy step and the next rollout run, when it can run there (a CPU value network "
        "under Adam, a batch under 64 MB), else in a thread beside the policy step: they are "
        "independent, so the result is the same, in less wall time.",
    )
    checkpoint_every: int = Field(
        10,
        ge=0,
        description="Iterations between checkpoints in run_dir; 0 = only at the end or on a "
        "signal.",
    )
    device: str = Field("cpu", description="torch device: 'cpu', 'cuda', 'cuda:N' or 'mps'.")
    torch_threads: int = Field(
        1, ge=0, le=1024, description="torch.set_num_threads on CPU; 0 leaves torch's default."
    )
    run_dir: str | None = Field(
        None, description="Directory for config.yaml, metrics.jsonl, evals.jsonl and the model."
    )

    @field_validator("run_dir", mode="before")
    @classmethod
    def _path_as_string(cls, value: Any) -> Any:
        """A ``pathlib.Path`` (any ``os.PathLike``) is taken as its string."""
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        try:
            torch.device(value)
        except RuntimeError:
            raise ValueError(
                f"unknown device {value!r} (allowed: 'cpu', 'cuda', 'cuda:N', 'mps')"
            ) from None
        return value

    @model_validator(mode="after")
    def _steps_divide_by_envs(self) -> TRPOConfig:
        if self.steps_per_iteration % self.num_envs:
            raise ValueError(
                f"steps_per_iteration = {self.steps_per_iteration} must be a multiple of "
                f"num_envs = {self.num_envs}"
            )
        return self

    @property
    def steps_per_env(self) -> int:
        """Vector steps per iteration: ``steps_per_iteration // num_envs``."""
        return self.steps_per_iteration // self.num_envs

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TRPOConfig:
        """Validate ``data``, raising ConfigError with a one-line message on failure."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as error:
            raise ConfigError(describe_validation_error(error)) from None

    @classmethod
    def from_file(cls, path: str | Path, overrides: Iterable[str] = ()) -> TRPOConfig:
        """Load a YAML, TOML or JSON file, then apply ``key=value`` overrides."""
        return cls.from_dict(merge_dicts(read_config_file(path), parse_overrides(overrides)))

    @classmethod
    def from_preset(cls, env_id: str, source: str = "default", **overrides: Any) -> TRPOConfig:
        """The tuned settings for ``env_id`` from the preset files in ``rl/presets/`` (plain
        defaults if there is none), updated by ``overrides`` (nested dicts for nested fields).
        ``source="zoo"``: RL Zoo's settings (``rl.presets.find_preset``)."""
        preset = find_preset(env_id, source)
        settings = copy.deepcopy(preset.config) if preset is not None else {}
        return cls.from_dict(merge_dicts({"env_id": env_id, **settings}, overrides))

    def with_overrides(self, overrides: Iterable[str] | Mapping[str, Any]) -> TRPOConfig:
        """A new config with ``key=value`` strings (dotted keys for nested fields) or a dict."""
        update = overrides if isinstance(overrides, Mapping) else parse_overrides(overrides)
        return self.from_dict(merge_dicts(self.model_dump(), update))

    def to_yaml(self) -> str:
        """The full resolved config as YAML, loadable again by ``from_file``."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a config mapping from YAML (``yaml.safe_load``), TOML or JSON, by file suffix."""
    path, suffix = Path(path), Path(path).suffix.lower()
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read config file {str(path)!r}: {error.strerror}") from None
    if suffix not in _LOADERS:
        raise ConfigError(
            f"config file {str(path)!r}: unknown suffix {suffix!r} (allowed: {', '.join(_LOADERS)})"
        )
    try:
        data = _LOADERS[suffix](text)
    except ConfigError:
        raise
    except (yaml.YAMLError, ValueError) as error:  # json's and tomllib's errors are ValueErrors
        raise ConfigError(f"config file {str(path)!r} is not valid: {first_line(error)}") from None
    if not isinstance(data, dict | None):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of field: value")
    return data or {}


def _load_toml(text: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ConfigError("reading TOML on Python 3.10 needs: pip install tomli") from None
    return tomllib.loads(text)


_LOADERS: dict[str, Callable[[str], Any]] = {
    ".yaml": yaml.safe_load,
    ".yml": yaml.safe_load,
    ".toml": _load_toml,
    ".json": json.loads,
}


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Turn ``["policy.hidden_sizes=[32,32]", "gamma=0.9"]`` into a nested dict; values are read
    as JSON when they parse as JSON, else as YAML scalars/lists, else strings."""
    result: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not all(key.split(".")):  # no '=', or an empty (dotted) key
            raise ConfigError(f"override {item!r} must look like key=value (dotted key allowed)")
        *parents, leaf = key.split(".")
        node = result
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is set both as a value and a group")
            node = child
        node[leaf] = _parse_value(raw.strip())
    return result


def _parse_value(raw: str) -> Any:
    with contextlib.suppress(json.JSONDecodeError):
        return json.loads(raw)
    try:
        return yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        return raw


def flatten_dict(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"value": {"epochs": 20}}`` -> ``{"value.epochs": 20}`` (empty mappings kept)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten_dict(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def merge_dicts(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: values of ``update`` win; nested mappings merge key by key."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_dicts(merged[key], value)
        else:
            merged[key] = value
    return merged


def describe_validation_error(error: ValidationError) -> str:
    """One line naming the first bad field, its value and what is allowed."""
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        allowed = _field_names_at(first["loc"][:-1])
        parent = "".join(f"{part}." for part in first["loc"][:-1])
        hint = _did_you_mean(str(first["loc"][-1]), allowed, parent)
        return f"unknown config field {field!r}{hint} (allowed: {', '.join(allowed)})"
    if not field:
        return f"invalid config: {message}"
    return f"invalid config: {field} = {first.get('input')!r}: {message}"


# sb3-contrib / RL Zoo names and ours (rl/presets/classic_control.yaml has the mapping).
SB3_NAMES = {
    "target_kl": "'max_kl' (for continuous actions: target_kl x the action dimension)",
    "n_steps": "'steps_per_iteration' (= n_steps x num_envs)",
    "total_timesteps": "'total_steps'",
    "n_timesteps": "'total_steps'",
    "n_envs": "'num_envs'",
    "n_critic_updates": "'value.epochs'",
    "batch_size": "'value.minibatch_size'",
    "learning_rate": "'value.learning_rate'",
    "cg_max_steps": "'cg_iters'",
    "cg_damping": "'damping' (for continuous actions: cg_damping x the action dimension)",
    "gae_lambda": "'lam'",
    "sub_sampling_factor": "'fvp_subsample' (= 1 / sub_sampling_factor)",
    "line_search_max_iter": "'backtrack_iters'",
    "line_search_shrinking_factor": "'backtrack_coeff'",
    "normalize_advantage": "'normalize_advantages'",
    "policy_kwargs": "'policy' (e.g. policy.hidden_sizes)",
    "net_arch": "'policy.hidden_sizes' and 'value.hidden_sizes'",
}


def _did_you_mean(name: str, allowed: list[str], parent: str) -> str:
    """``": did you mean 'x'?"`` from the sb3 names, else the closest allowed names."""
    if not parent and name in SB3_NAMES:
        return f": did you mean {SB3_NAMES[name]}?"
    close = difflib.get_close_matches(name, allowed, n=3, cutoff=0.6)
    return f": did you mean {' or '.join(repr(parent + c) for c in close)}?" if close else ""


def _field_names_at(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = TRPOConfig
    for part in loc:
        annotation = model.model_fields[str(part)].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return sorted(model.model_fields)
