"""``trpo train``: a run from an env id or a config file, or ``--resume RUN_DIR`` (``rl.cli``
dispatches here; ``rl.train`` runs it on each rank of a torchrun job)."""

from __future__ import annotations

import argparse
import contextlib
import copy
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym

from rl.atari import ensure_registered
from rl.checkpoint import CheckpointWarning
from rl.comm import Comm
from rl.config import (
    ConfigError,
    TRPOConfig,
    flatten_dict,
    merge_dicts,
    parse_overrides,
    read_config_file,
)
from rl.errors import RunDirLockedError, TrainingError, first_line
from rl.presets import Preset, find_preset, similar_presets
from rl.progress import (
    TENSORBOARD_HINT,
    Progress,
    ProgressMode,
    TensorBoardProgress,
    make_progress,
    tensorboard_available,
)
from rl.run_files import (
    ALL_RUN_FILES,
    CHECKPOINT_FILE,
    CONFIG_FILE,
    PREVIOUS_CHECKPOINT_FILE,
    CheckpointError,
)
from rl.trpo import TRPO

__all__ = ["CONFIG_SUFFIXES", "UsageError", "config_data", "train_command"]

CONFIG_SUFFIXES = (".yaml", ".yml", ".toml", ".json")


class UsageError(Exception):
    """A bad argument or config value: printed as one line, exit code 2."""


def train_command(args: argparse.Namespace, make_comm: Callable[[], Comm] = Comm) -> int:
    """``trpo train``; ``rl.train`` runs it with ``make_comm=DistributedComm``."""
    if args.resume is not None:
        return _resume(args, make_comm())
    if args.restart:
        raise UsageError("--restart goes with --resume RUN_DIR")
    if args.target is None:
        raise UsageError("ENV_ID_OR_CONFIG_FILE is required (or --resume RUN_DIR)")
    if args.tensorboard and not tensorboard_available():
        raise UsageError(f"--tensorboard: {TENSORBOARD_HINT}")
    config, preset_lines, made_run_dir = _resolve_train_config(args)
    try:
        agent = _make_agent(config, make_comm())
    except BaseException:
        if made_run_dir:  # the default run directory made for it, still empty
            with contextlib.suppress(OSError):
                Path(config.run_dir).rmdir()
        raise
    if not args.quiet:
        if preset_lines is not None:
            print(preset_lines, flush=True)
        elif config.env_id is not None and (similar := similar_presets(config.env_id)):
            names = " or ".join(similar)
            print(f"trpo: no preset for {config.env_id}, plain defaults apply (a preset exists "
                  f"for {names}: trpo presets)", flush=True)  # fmt: skip
        print(f"trpo: training {config.env_id} for {config.total_steps} steps, seed "
              f"{config.seed}, run dir {config.run_dir}", flush=True)  # fmt: skip
    return _run_training(agent, args.quiet, args.tensorboard)


def _run_training(agent: TRPO, quiet: bool, tensorboard: bool = False) -> int:
    """``learn`` to the end; 128 + the signal number if SIGINT/SIGTERM stopped it."""
    try:
        agent.learn(progress=_progress(agent, quiet, tensorboard), final_evaluation=True)
    except KeyboardInterrupt:
        run_dir = agent.config.run_dir
        if (Path(run_dir) / CHECKPOINT_FILE).exists():
            print("trpo train: interrupted; continue from the last checkpoint with: "
                  f"trpo train --resume {run_dir}", file=sys.stderr)  # fmt: skip
            return 130
        raise
    except RunDirLockedError:
        raise
    except (TrainingError, OSError, MemoryError) as error:
        raise TrainingError(_with_resume_hint(error, agent.config.run_dir)) from error
    finally:
        agent.close()
    if agent.stopped_by is not None:
        return 128 + signal.Signals[agent.stopped_by].value
    return 0


def _with_resume_hint(error: BaseException, run_dir: str) -> str:
    """The error's first line, and how to continue when the run directory can resume."""
    message = first_line(error)
    if not (Path(run_dir) / CONFIG_FILE).is_file():
        return message
    has_checkpoint = any(
        (Path(run_dir) / name).is_file() for name in (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE)
    )
    kept = "its last checkpoint is intact" if has_checkpoint else "it has no checkpoint yet"
    hint = f"once the cause is fixed, continue with: trpo train --resume {run_dir}"
    return f"{message}; {kept}: {hint}"


def _progress(agent: TRPO, quiet: bool, tensorboard: bool) -> ProgressMode | Progress:
    """The display of ``learn``; wrapped to also log to RUN_DIR/tensorboard if asked."""
    mode: ProgressMode = "quiet" if quiet else "auto"
    if not tensorboard:
        return mode
    if not tensorboard_available():
        raise UsageError(f"--tensorboard: {TENSORBOARD_HINT}")
    log_dir = Path(agent.config.run_dir) / "tensorboard"
    return TensorBoardProgress(make_progress(mode, agent.config.total_steps), log_dir)


def _resume(args: argparse.Namespace, comm: Comm) -> int:
    """``trpo train --resume RUN_DIR``: continue from config.yaml and the latest checkpoint."""
    given = {"ENV_ID_OR_CONFIG_FILE": args.target, "--seed": args.seed,
             "--num-envs": args.num_envs, "--run-dir": args.run_dir, "--set": args.set}  # fmt: skip
    extra = [name for name, value in given.items() if value]
    if extra:
        raise UsageError(
            f"--resume continues a run from its own config.yaml: {', '.join(extra)} cannot "
            "be given with it (only --total-steps, --restart and --quiet)"
        )
    run_dir = args.resume
    with _checkpoint_warnings_as_lines():
        try:
            steps, restart = args.total_steps, args.restart
            agent = TRPO.resume(run_dir, total_steps=steps, restart=restart, comm=comm)
        except CheckpointError as error:
            raise UsageError(f"--resume {run_dir!r}: {error}") from None
        config = agent.config
        if agent.resumed_from is None:
            print(f"trpo: no checkpoint in {run_dir}: starting afresh from its config.yaml")
        elif agent.step >= config.total_steps:
            agent.close()
            print(f"trpo: the run in {run_dir} is finished ({agent.step} of "
                  f"{config.total_steps} steps); nothing to do (--total-steps N trains it "
                  "longer)")  # fmt: skip
            return 0
        elif not args.quiet:
            print(f"trpo: resuming {config.env_id} in {run_dir} from step {agent.step} "
                  f"(iteration {agent.iteration}) to {config.total_steps} steps",
                  flush=True)  # fmt: skip
        return _run_training(agent, args.quiet, args.tensorboard)


@contextlib.contextmanager
def _checkpoint_warnings_as_lines() -> Iterator[None]:
    """Show each CheckpointWarning as one ``trpo train: warning: ...`` line on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", CheckpointWarning)
        show_other = warnings.showwarning

        def show(message, category, *args, **kwargs):  # type: ignore[no-untyped-def]
            if issubclass(category, CheckpointWarning):
                print(f"trpo train: warning: {message}", file=sys.stderr, flush=True)
            else:
                show_other(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield


def _resolve_train_config(args: argparse.Namespace) -> tuple[TRPOConfig, str | None, bool]:
    """Preset of the env ← config file ← --set ← flags; the config, two lines naming the preset
    applied, its settings and those given other values (None without a preset), and whether the
    run dir was made here."""
    flags = {"total_steps": args.total_steps, "seed": args.seed, "num_envs": args.num_envs,
             "run_dir": args.run_dir}  # fmt: skip
    merged, preset, data = config_data(args.target, args.set, flags, args.preset)
    config = TRPOConfig.from_dict(merged)
    made_run_dir = config.run_dir is None
    if made_run_dir:
        config = config.with_overrides({"run_dir": _default_run_dir(config.env_id, config.seed)})
    held = [name for name in ALL_RUN_FILES if (Path(config.run_dir) / name).exists()]
    if held:  # any of them: a run whose metrics.jsonl was deleted is still a run
        raise UsageError(
            f"run_dir = {config.run_dir!r} already holds a run ({', '.join(held)}); choose "
            "another, or continue it with: trpo train --resume " + str(config.run_dir)
        )
    if Path(config.run_dir).exists() and not Path(config.run_dir).is_dir():
        raise UsageError(f"run_dir = {config.run_dir!r} is a file, not a directory")
    if preset is None:
        return config, None, made_run_dir
    settings, given = flatten_dict(preset.config), flatten_dict(data)
    overridden = sorted(k for k in settings.keys() & given.keys() if given[k] != settings[k])
    changed = f"; overridden here: {', '.join(overridden)}" if overridden else ""
    lines = (
        f"trpo: preset {preset.env_id} (rl/presets/{preset.file}; source: {preset.source})\n"
        f"      {' '.join(f'{key}={value}' for key, value in settings.items())}{changed}"
    )
    return config, lines, made_run_dir


def config_data(
    target: str, overrides: list[str], flags: dict[str, Any], preset_source: str
) -> tuple[dict[str, Any], Preset | None, dict[str, Any]]:
    """(preset settings ← config file or env id ← --set ← flags, the preset, what the
    command line gave without the preset); UsageError for a bad env id or preset."""
    path = Path(target)
    from_file = path.suffix.lower() in CONFIG_SUFFIXES or path.is_file()
    file_data = read_config_file(path) if from_file else {"env_id": target}
    given = {key: value for key, value in flags.items() if value is not None}
    data = merge_dicts(file_data, merge_dicts(parse_overrides(overrides), given))
    env_id = data.get("env_id")
    if not isinstance(env_id, str) or not env_id:
        raise UsageError(f"env_id = {env_id!r}: a gymnasium env id is required")
    try:
        ensure_registered(env_id)
        gym.spec(env_id)
    except gym.error.Error as error:
        raise UsageError(f"env_id = {env_id!r}: {first_line(error)}") from None
    preset = find_preset(env_id, preset_source)
    if preset is None and preset_source != "default":
        raise UsageError(f"--preset {preset_source}: none for env_id = {env_id!r} (trpo presets)")
    settings = copy.deepcopy(preset.config) if preset is not None else {}
    return merge_dicts(settings, data), preset, data


def _default_run_dir(env_id: str, seed: int) -> str:
    """``runs/ENV-seedS-STAMP``, created here (atomic mkdir: runs started in the same second
    get ``-2``, ``-3``...)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{env_id.replace('/', '_')}-seed{seed}-{stamp}"
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, suffix = base, 1
    while True:
        with contextlib.suppress(FileExistsError):
            candidate.mkdir()
            return str(candidate)
        suffix += 1
        candidate = base.with_name(f"{base.name}-{suffix}")


def _make_agent(config: TRPOConfig, comm: Comm) -> TRPO:
    try:
        return TRPO(config, comm=comm)
    except Exception as error:  # whatever the env's constructor raises (KeyError, assert, ...)
        if isinstance(error, (TrainingError, ConfigError)):
            raise
        if isinstance(error, ValueError) and str(error).startswith("device = "):
            raise UsageError(first_line(error)) from None  # the config's device, not the env
        message = (
            f"{type(error).__name__}: {first_line(error)}" if str(error).strip() else repr(error)
        )
        raise UsageError(
            f"cannot build the agent for env_id = {config.env_id!r} "
            f"(env_kwargs = {config.env_kwargs!r}): {message}"
        ) from None
