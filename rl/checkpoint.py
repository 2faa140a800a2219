"""Checkpoints of a training run and exact resume: build, write, find, check and load them
(how and why: docs/checkpoints.md)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rl.comm import Comm
from rl.config import ConfigError, TRPOConfig, merge_dicts, read_config_file
from rl.envs import VectorEnvs
from rl.errors import CheckpointWriteError
from rl.replay import capture_env_state, restore_env_state
from rl.rollout import RolloutCollector
from rl.run_files import (
    CHECKPOINT_FILE,
    CHECKPOINT_FORMAT,
    CONFIG_FILE,
    MODEL_FILE,
    PREVIOUS_CHECKPOINT_FILE,
    CheckpointError,
    atomic_torch_save,
    load_plain_file,
    remove_stale_temporaries,
)
from rl.state import TrainingState, capture_rng_states, restore_rng_states

__all__ = ["CheckpointWarning", "Checkpointer", "latest_checkpoint", "load_run",
           "load_run_of_job", "read_checkpoint", "restore_training_state"]  # fmt: skip

# A checkpoint only fits a config that agrees with it on these (networks' shapes, envs).
STRUCTURAL_FIELDS = ("env_id", "env_kwargs", "num_envs", "normalize_observations",
                     "normalize_rewards", "policy.hidden_sizes", "policy.activation",
                     "value.hidden_sizes", "value.activation")  # fmt: skip
# Fields that change neither what is learned nor the rows written.
FREE_FIELDS = ("total_steps", "run_dir", "checkpoint_every", "device", "torch_threads",
               "vector_mode")  # fmt: skip
RANK_STATES = "rank_states"  # checkpoint key: [{"envs", "rng"}] of ranks 1 .. K-1


class CheckpointWarning(UserWarning):
    """Resume goes on, but not quite as asked (fallback checkpoint, changed setting...)."""


def write_checkpoint(state: dict[str, Any], directory: str | Path) -> Path:
    """Write ``state`` as ``directory/checkpoint.pt``, keeping the previous one beside it."""
    path = Path(directory) / CHECKPOINT_FILE
    atomic_torch_save(state, path, previous=path.with_name(PREVIOUS_CHECKPOINT_FILE))
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint (plain data only); CheckpointError if it is none."""
    state = load_plain_file(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an rl TRPO checkpoint ({CHECKPOINT_FORMAT})")
    return state


def latest_checkpoint(directory: str | Path) -> tuple[dict[str, Any], Path] | None:
    """The newest readable checkpoint of a run directory and its path (checkpoint.prev.pt
    with a warning if checkpoint.pt is bad); None if none; CheckpointError if none reads."""
    directory = Path(directory)
    latest, previous = directory / CHECKPOINT_FILE, directory / PREVIOUS_CHECKPOINT_FILE
    if not latest.exists() and not previous.exists():
        return None
    problem = f"{str(latest)!r} is missing"
    if latest.exists():
        try:
            return read_checkpoint(latest), latest
        except CheckpointError as error:
            problem = str(error)
    if not previous.exists():
        raise CheckpointError(f"{problem}, and there is no {PREVIOUS_CHECKPOINT_FILE} beside it")
    try:
        state = read_checkpoint(previous)
    except CheckpointError as error:
        raise CheckpointError(f"{problem}; the previous checkpoint too: {error}") from None
    warnings.warn(
        f"{problem}; resuming from the previous checkpoint {str(previous)!r} "
        f"(iteration {state['progress']['iteration']})",
        CheckpointWarning,
        stacklevel=2,
    )
    return state, previous


def _field(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return list(value) if isinstance(value, tuple) else value


def _leaf_names(config: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in config.items():
        if isinstance(value, Mapping) and key != "env_kwargs":
            yield from _leaf_names(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def check_resumable(saved: Mapping[str, Any], config: TRPOConfig) -> list[str]:
    """CheckpointError if ``config`` differs from ``saved`` in a STRUCTURAL_FIELDS field;
    else the other changed fields (FREE_FIELDS aside) as ``"name: old -> new"``."""
    current = config.model_dump(mode="json")
    differ = {}  # name -> (old, new), in the config's order
    for name in _leaf_names(current):
        old, new = _field(saved, name), _field(current, name)
        if old != new and name not in FREE_FIELDS:
            differ[name] = (old, new)
    for name in STRUCTURAL_FIELDS:
        if name in differ:
            raise CheckpointError(
                f"the checkpoint was made with {name} = {differ[name][0]!r}, the config has "
                f"{name} = {differ[name][1]!r}: a checkpoint only resumes the same env and "
                "network architecture"
            )
    return [f"{name}: {old!r} -> {new!r}" for name, (old, new) in differ.items()]


def check_world_size(checkpoint: Mapping[str, Any], run_dir: str | Path, world_size: int) -> None:
    """CheckpointError unless ``checkpoint`` comes from a job of ``world_size`` ranks."""
    saved = int(checkpoint.get("world_size", 1))
    command = f"{saved} ranks in all, e.g. torchrun --nproc-per-node {saved} -m rl.train"
    if saved != world_size:
        raise CheckpointError(
            f"the checkpoint in {str(run_dir)!r} was written by a job of {saved} rank(s) and "
            f"this job has {world_size}: each rank resumes its own envs, so continue it with "
            f"{'trpo train' if saved == 1 else command} --resume {run_dir}"
        )


def build_checkpoint(
    config: TRPOConfig, state: TrainingState, snapshot: Mapping[str, Any]
) -> dict[str, Any]:
    """The checkpoint (plain data): ``state``'s networks and optimizers with the envs, RNGs
    and statistics of ``snapshot`` (``Checkpointer.capture``)."""
    saved = state.state_dict(config.model_dump(mode="json"), rng=snapshot["rng"])
    envs = snapshot["envs"]
    saved["model"]["obs_normalizer"] = envs["obs_normalizer"]
    if envs["reward_normalizer"] is not None:  # its statistics, not the returns in progress
        statistics = {key: envs["reward_normalizer"][key] for key in ("mean", "var", "count")}
        saved["model"]["reward_statistics"] = statistics
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "config": config.model_dump(mode="json"),
        **saved,
        "envs": envs,
        "progress": {
            **saved["progress"],
            "last_evaluation": snapshot["last_evaluation"],
            "time": snapshot["seconds"],
        },
    }
    rank_states = snapshot["rank_states"]
    if rank_states is not None and len(rank_states) > 1:
        checkpoint["world_size"] = len(rank_states)
        checkpoint[RANK_STATES] = rank_states[1:]
    return checkpoint


def restore_training_state(
    state: TrainingState,
    envs: VectorEnvs,
    collector: RolloutCollector,
    checkpoint: Mapping[str, Any],
) -> list[int]:
    """Restore the freshly reset training envs, then the RNGs; returns the sub-envs whose
    replay did not reproduce their state."""
    diverged = restore_env_state(envs, collector, checkpoint["envs"])
    restore_rng_states(checkpoint["rng"], state.generators)
    return diverged


def load_run(
    run_dir: str | Path, total_steps: int | None = None, restart: bool = False
) -> tuple[TRPOConfig, dict[str, Any] | None, Path | None]:
    """A run directory's config (``run_dir`` and ``total_steps`` updated), latest
    checkpoint and its path (None, None without one; a finished run without one is
    refused unless ``restart``)."""
    run_dir = Path(run_dir)
    config_path = run_dir / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{str(run_dir)!r} has no {CONFIG_FILE}: not a run directory")
    overrides: dict[str, Any] = {"run_dir": str(run_dir)}
    if total_steps is not None:
        overrides["total_steps"] = total_steps
    found = latest_checkpoint(run_dir)
    # A key missing from an older config.yaml takes the checkpoint's value, not the default.
    saved = found[0]["config"] if found is not None else {}
    try:
        data = merge_dicts(merge_dicts(saved, read_config_file(config_path)), overrides)
        config = TRPOConfig.from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"{config_path}: {error}") from None
    if found is None:
        if (run_dir / MODEL_FILE).is_file() and not restart:
            raise CheckpointError(
                f"{str(run_dir)!r} holds a finished run ({MODEL_FILE}) but no checkpoint to "
                "continue from: resuming would start afresh and drop its metrics, evaluations "
                f"and {MODEL_FILE}; train into another run_dir, or pass --restart "
                "(TRPO.resume(..., restart=True)) to start this one afresh"
            )
        return config, None, None
    checkpoint, path = found
    changed = check_resumable(checkpoint["config"], config)
    if changed:
        warnings.warn(
            f"{CONFIG_FILE} differs from the checkpoint's config in {'; '.join(changed)}: "
            f"the run continues with {CONFIG_FILE}'s values (not an exact resume)",
            CheckpointWarning,
            stacklevel=2,
        )
    return config, checkpoint, path


def load_run_of_job(
    run_dir: str | Path, total_steps: int | None, restart: bool, comm: Comm
) -> tuple[TRPOConfig, dict[str, Any] | None, Path | None]:
    """``load_run`` on the main rank (its error raised on every rank); every rank receives
    the config, the common part (broadcast) and only its own envs and RNGs (scattered)."""
    loaded: Any = None
    rank_parts: list[Any] | None = None
    if comm.is_main:
        try:
            config, checkpoint, path = load_run(run_dir, total_steps, restart)
            if checkpoint is not None:
                check_world_size(checkpoint, run_dir, comm.world_size)
                own = {"envs": checkpoint.pop("envs"), "rng": checkpoint.pop("rng")}
                rank_parts = [own, *checkpoint.pop(RANK_STATES, [])]
            loaded = (config, checkpoint, path)
        except Exception as error:  # raised on every rank: none waits for the others
            if comm.world_size == 1:
                raise
            loaded = error
    config, common, path = comm.broadcast(loaded)
    if common is None:
        return config, None, path
    return config, {**common, **comm.scatter(rank_parts)}, path


class Checkpointer:
    """Writes the checkpoints of one ``learn`` call (the main rank) of ``state`` and the
    training ``envs`` (made with ``RecordingFactory``) stepped by ``collector``."""

    def __init__(
        self,
        config: TRPOConfig,
        state: TrainingState,
        comm: Comm,
        directory: str | Path,
        envs: VectorEnvs,
        collector: RolloutCollector,
    ) -> None:
        self.config, self.state, self.comm, self.directory = config, state, comm, Path(directory)
        self.envs, self.collector = envs, collector
        self.saved_iteration: int | None = None
        if comm.is_main:
            remove_stale_temporaries(self.directory)  # left by a run killed while writing

    def due(self) -> bool:
        every = self.config.checkpoint_every
        return every > 0 and self.state.iteration % every == 0

    def capture(self, seconds: float) -> dict[str, Any] | None:
        """This iteration's checkpoint but its networks and optimizers, taken now on every
        rank (gathered to the main rank), or None if written already; ``write`` completes
        it (the value fit may finish beside the next rollout first)."""
        if self.saved_iteration == self.state.iteration:
            return None
        envs = capture_env_state(self.envs, self.collector)
        rng = capture_rng_states(self.state.generators)
        own = {"envs": envs, "rng": rng} if self.comm.world_size > 1 else None
        return {
            "iteration": self.state.iteration,
            "seconds": seconds,
            "envs": envs,
            "rng": rng,
            "rank_states": self.comm.gather_to_main(own),
            "last_evaluation": self.state.last_evaluation,
        }

    def write(self, snapshot: Mapping[str, Any] | None) -> None:
        """Write the checkpoint of ``snapshot`` (main rank; nothing for None);
        CheckpointWriteError if the file system refuses (the old ones stay intact)."""
        if snapshot is None:
            return
        if self.comm.is_main:
            try:
                write_checkpoint(
                    build_checkpoint(self.config, self.state, snapshot), self.directory
                )
            except OSError as error:
                raise CheckpointWriteError(
                    f"cannot write the checkpoint of iteration {snapshot['iteration']} to "
                    f"{str(self.directory)!r}: {error.strerror or error}; the checkpoints "
                    "already there are intact"
                ) from error
        self.saved_iteration = snapshot["iteration"]

    def save(self, seconds: float) -> None:
        """Write a checkpoint of the current state (every rank calls it, once an iteration)."""
        self.write(self.capture(seconds))
