"""Checkpoints of a training run, and exact resume.

``RUN_DIR/checkpoint.pt`` holds everything a run needs to continue as if it had never
stopped: the policy and value networks, both optimizers' states, the normalization
statistics, the RNG states (torch's global generator, the agent's action and shuffle
generators, numpy's and Python's global generators, the action spaces' generators), the
state of every training env, the step and iteration counters, the wall time so far and the
config. ``rl.TRPO.learn`` writes one every ``config.checkpoint_every`` iterations, at the
end, and when SIGINT or SIGTERM stops it; ``rl.TRPO.resume(run_dir)`` continues from it.

Files: a checkpoint is written to a temporary file in the run directory, flushed, fsynced
and renamed over ``checkpoint.pt``; the checkpoint it replaces is kept as
``checkpoint.prev.pt`` (hard-linked under a temporary name that is renamed over it, so
``checkpoint.pt`` exists at every moment), and a ``checkpoint.pt`` that cannot be read
makes resume fall back to it with a warning. A process killed (even by SIGKILL) at any
point of the write leaves both complete; the next ``learn`` in the directory removes the
temporary file it may leave. A write the file system refuses (disk full, read-only)
raises ``rl.errors.CheckpointWriteError`` and leaves the checkpoints there as they were.
``benchmarks/crash_safety.py`` checks all of this by killing ``trpo train`` 20 times.
(Temporary names carry the writer's process id; only those of dead processes are removed.)
Only tensors, numbers, strings, lists, tuples and dicts are stored, and checkpoints (and
model files) are read with ``torch.load(..., weights_only=True)``: loading one never runs
code, and a file built to run code is refused (``UnsafeCheckpointError``).

Exact resume of the environments
--------------------------------
Gymnasium envs cannot be saved in general (MuJoCo, Box2D, ALE and user envs each keep
their state their own way), so each training sub-env is wrapped in an ``EpisodeRecorder``
that keeps how its current episode began and the actions taken since:

* the seed of its reset when the reset was seeded (the first episode: ``seed + i``), else
  the state of the env's ``np_random`` just before the reset (later episodes: gymnasium's
  NEXT_STEP autoreset calls ``reset()`` without a seed and the env draws its initial state
  from ``np_random``), and for ALE (Atari) envs a snapshot of the emulator with its own RNG,
  which carries game state and sticky-action randomness from one episode to the next;
* every action passed to ``step`` since that reset;
* whether the episode has ended: under NEXT_STEP autoreset the vector env then owes the
  sub-env a reset on its next step;
* a digest of the last observation, to check the replay.

On resume each sub-env is reset the same way (with the seed, or with ``np_random`` and the
emulator set to their saved states) and the actions are replayed on the sub-env itself,
below the vector wrappers: the replay does not touch the normalization or episode
statistics (they stay frozen), which are then set to their saved values (running means,
variances and counts, NormalizeReward's discounted returns in progress, the episode returns
and lengths in progress, the recent-episode queues). A sub-env whose episode had ended
performs the pending reset on its next ``step``, returning reward 0 and no termination as
gymnasium's autoreset does. Episodes are not cut at checkpoints, so what is learned does
not change: a run stopped after a checkpoint and resumed writes the same metrics rows
(timing fields aside) as one that never stopped, on CPU with the same torch version and
thread count.

Signals: while ``learn`` writes a run directory, the first SIGINT or SIGTERM lets the
current iteration finish, writes a checkpoint and returns (``agent.stopped_by``); a second
one interrupts at once, and the last periodic checkpoint stays. AsyncVectorEnv workers
ignore both signals, so that a Ctrl-C sent to the whole process group does not kill them
before the checkpoint is taken; they exit when the main process closes them.

Limits: this is exact for envs whose state is a function of (reset seed, or ``np_random``
state and for ALE the emulator state, and the actions since the reset). Envs with
randomness or state elsewhere (the global ``random`` or numpy generator, wall-clock time,
external simulators or servers, counters kept across resets) continue from a state that
may differ: the replay compares the last observation with the saved digest and warns
(``CheckpointWarning``) when they differ; training then continues from the checkpoint's
networks and statistics, but not bit for bit. Resuming costs up to one episode of env steps
per sub-env, and the recorder keeps the current episode's actions in memory, at most
``EpisodeRecorder.MAX_REPLAY_ACTIONS`` (100,000) per sub-env: past that (an env without a
time limit) the episode is no longer recorded, and a resume resets that sub-env instead of
replaying it and warns that it is not bit for bit, so memory, checkpoint size and replay
time stay bounded. Reset ``options`` are not recorded
(rl never passes any). An ALE snapshot is parsed by ALE itself (``ale_py.ALEState``), not by
pickle.

Example:
    >>> agent = rl.TRPO.resume("runs/Pendulum-v1-seed0")  # doctest: +SKIP
    >>> agent.learn()  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import random
import signal
import sys
import tempfile
import threading
import warnings
import zipfile
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from rl.config import ConfigError, TRPOConfig, merge_dicts, read_config_file
from rl.envs import (
    EnvFactory,
    FrozenObservationNormalizer,
    VectorEnvs,
    restore_reward_statistics,
    reward_statistics,
)
from rl.errors import CheckpointWriteError
from rl.run_files import CONFIG_FILE, EVALS_FILE, METRICS_FILE, MODEL_FILE

if TYPE_CHECKING:
    from rl.rollout import RolloutCollector
    from rl.trpo import TRPO

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "PREVIOUS_CHECKPOINT_FILE",
    "CheckpointError",
    "CheckpointWarning",
    "Checkpointer",
    "EpisodeRecorder",
    "RecordingFactory",
    "StopOnSignals",
    "UnsafeCheckpointError",
    "atomic_torch_save",
    "capture_env_state",
    "capture_rng_states",
    "check_resumable",
    "check_world_size",
    "latest_checkpoint",
    "load_plain_file",
    "load_run",
    "read_checkpoint",
    "remove_stale_temporaries",
    "restore_agent",
    "restore_env_state",
    "restore_rng_states",
    "restore_training_state",
    "write_checkpoint",
]

CHECKPOINT_FILE = "checkpoint.pt"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.prev.pt"
CHECKPOINT_FORMAT = "rl.trpo.checkpoint/1"
RUN_FILES = (CONFIG_FILE, METRICS_FILE, EVALS_FILE)  # rewritten atomically by rl.run_files
# Every file a run writes: a directory holding any of them holds a run.
ALL_RUN_FILES = (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE, MODEL_FILE, *RUN_FILES)

# Config fields that fix the networks' shapes or the envs' state: a checkpoint only fits a
# config that agrees with it on these. Other fields may change between stop and resume.
STRUCTURAL_FIELDS = (
    "env_id",
    "env_kwargs",
    "num_envs",
    "normalize_observations",
    "normalize_rewards",
    "policy.hidden_sizes",
    "policy.activation",
    "value.hidden_sizes",
    "value.activation",
)
# Fields that change neither what is learned nor the rows written.
FREE_FIELDS = (
    "total_steps",
    "run_dir",
    "checkpoint_every",
    "device",
    "torch_threads",
    "vector_mode",
)


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the run it is loaded into."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """A file that holds more than plain data, e.g. built to run code on load: refused
    without running anything."""


class CheckpointWarning(UserWarning):
    """Resume goes on, but not quite as asked: a fallback checkpoint, a changed setting or
    an env that did not return to its saved state."""


# ------------------------------------------------------------------------------- files
def atomic_torch_save(state: Any, path: str | Path, previous: str | Path | None = None) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync it, then rename it over
    ``path``; with ``previous``, the file ``path`` held is first kept as ``previous``.

    A crash (even SIGKILL or power loss after the final fsync) at any point leaves ``path``
    holding either the old file or the new one, complete, and ``previous`` (if asked for)
    an older complete one; at worst a ``.NAME.*.tmp`` file is left behind (see
    ``remove_stale_temporaries``). An error (e.g. ENOSPC) removes the temporary file and
    re-raises, leaving ``path`` and ``previous`` as they were or ``previous`` updated.
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        if previous is not None and path.exists():
            _keep_as_previous(path, Path(previous))
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(path.parent)


def _keep_as_previous(path: Path, previous: Path) -> None:
    """Make ``previous`` name the file ``path`` names, with ``path`` named all along: a hard
    link under a temporary name renamed over ``previous``. Where hard links are refused
    (some network and FAT file systems), ``path`` is renamed to ``previous``: until the new
    file is renamed in, only ``previous`` exists, which ``latest_checkpoint`` falls back to.
    """
    link = previous.with_name(f".{previous.name}.{os.getpid()}.link.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    try:
        os.link(path, link)
    except OSError:
        os.replace(path, previous)
        return
    try:
        os.replace(link, previous)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)
        raise


def remove_stale_temporaries(directory: str | Path) -> list[Path]:
    """Delete the temporary files that writes killed midway left in ``directory``
    (``.checkpoint.pt.PID.*.tmp``, ``.config.yaml.PID.tmp`` and the like); returns them.

    Every temporary name carries its writer's process id: only those of processes that no
    longer exist are deleted, so processes writing into one run directory together (the
    ranks of a distributed run) keep theirs.
    """
    names = ALL_RUN_FILES
    stale = [
        path
        for name in names
        for path in Path(directory).glob(f".{name}.*.tmp")
        if path.is_file() and not _writer_alive(path.name[len(name) + 2 :].split(".")[0])
    ]
    for path in stale:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return stale


def _writer_alive(pid: str) -> bool:
    """Whether the process ``pid`` (text from a temporary name) exists; True when unsure."""
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, as another user's
        return True
    return True


def _fsync_directory(directory: Path) -> None:
    """Make the renames durable (POSIX); a no-op where directories cannot be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_checkpoint(state: dict[str, Any], directory: str | Path) -> Path:
    """Write ``state`` as ``directory/checkpoint.pt``, keeping the previous one beside it."""
    directory = Path(directory)
    path = directory / CHECKPOINT_FILE
    atomic_torch_save(state, path, previous=directory / PREVIOUS_CHECKPOINT_FILE)
    return path


def load_plain_file(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU, its failures as one-line
    CheckpointErrors: unreadable, holding anything but plain data (a file built to run code
    on load is refused, and nothing in it runs), truncated or corrupt."""
    path = Path(path)
    try:
        file = open(path, "rb")  # noqa: SIM115 - closed below; errors here are not corruption
    except OSError as error:
        raise CheckpointError(f"cannot read {str(path)!r}: {error.strerror or error}") from None
    with file:
        if not zipfile.is_zipfile(file):  # torch.save writes zip archives; this is not one
            raise CheckpointError(
                f"{str(path)!r} is truncated or corrupt: not a whole file written by torch.save"
            )
        file.seek(0)
        try:
            return torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            raise UnsafeCheckpointError(
                f"{str(path)!r} holds objects other than tensors, numbers and strings; refused: "
                f"Weights only load failed ({_unpickler_reason(error)}); rl loads files with "
                "weights_only=True and never runs code from them"
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as error:
            raise CheckpointError(
                f"{str(path)!r} is truncated or corrupt: {_first_line(error)}"
            ) from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; CheckpointError if it is unreadable,
    holds anything but plain data, or is not an rl checkpoint."""
    state = load_plain_file(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an rl TRPO checkpoint ({CHECKPOINT_FORMAT})")
    return state


def latest_checkpoint(directory: str | Path) -> tuple[dict[str, Any], Path] | None:
    """The newest readable checkpoint of a run directory and its path; None if it has none.

    Falls back to ``checkpoint.prev.pt`` with a CheckpointWarning when ``checkpoint.pt`` is
    missing or unreadable; raises CheckpointError when no checkpoint there can be read.
    """
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


def _unpickler_reason(error: pickle.UnpicklingError) -> str:
    """torch's one-sentence reason (``Unsupported global: GLOBAL os.system ...``) without
    its advice to load the file unsafely."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        return text.split(marker, 1)[1].strip().split(". ")[0]
    return _first_line(error)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ------------------------------------------------------------------------------- config
def _field(config: Mapping[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return list(value) if isinstance(value, tuple) else value


def check_resumable(saved: Mapping[str, Any], config: TRPOConfig) -> list[str]:
    """Raise CheckpointError if ``config`` differs from a checkpoint's config ``saved`` in a
    field of ``STRUCTURAL_FIELDS``; return the other fields that changed (``FREE_FIELDS``
    aside), as ``"name: old -> new"``, for a warning."""
    current = config.model_dump(mode="json")
    for name in STRUCTURAL_FIELDS:
        if _field(saved, name) != _field(current, name):
            raise CheckpointError(
                f"the checkpoint was made with {name} = {_field(saved, name)!r}, the config "
                f"has {name} = {_field(current, name)!r}: a checkpoint only resumes the same "
                "env and network architecture"
            )
    changed = []
    for name in _leaf_names(current):
        if name in FREE_FIELDS or name in STRUCTURAL_FIELDS:
            continue
        if _field(saved, name) != _field(current, name):
            changed.append(f"{name}: {_field(saved, name)!r} -> {_field(current, name)!r}")
    return changed


def _leaf_names(config: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in config.items():
        if isinstance(value, Mapping) and key != "env_kwargs":
            yield from _leaf_names(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def check_world_size(checkpoint: Mapping[str, Any], run_dir: str | Path, world_size: int) -> None:
    """Raise CheckpointError unless ``checkpoint`` was written by a job of ``world_size``
    ranks: each rank's envs and RNGs resume from their own saved state (a checkpoint of a
    torchrun job of K ranks, ``rl.distributed``, holds K; one of a single process, one)."""
    saved = int(checkpoint.get("world_size", 1))
    if saved == world_size:
        return
    resume = (
        f"trpo train --resume {run_dir}"
        if saved == 1
        else f"{saved} ranks in all, e.g. torchrun --nproc-per-node {saved} -m rl.train "
        f"--resume {run_dir}"
    )
    raise CheckpointError(
        f"the checkpoint in {str(run_dir)!r} was written by a job of {saved} rank(s) and "
        f"this job has {world_size}: each rank resumes its own envs, so continue it with "
        f"{resume}"
    )


# ------------------------------------------------------------------------------- RNG
def _plain(value: Any) -> Any:
    """numpy arrays and scalars inside an RNG state as lists and Python numbers."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _generator_state(generator: np.random.Generator) -> dict[str, Any]:
    return _plain(generator.bit_generator.state)


def _generator_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = dict(state)
    return np.random.Generator(bit_generator)


def capture_rng_states(generators: Mapping[str, torch.Generator]) -> dict[str, Any]:
    """torch's, numpy's and Python's global generators and the named torch ``generators``."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _plain(np.random.get_state(legacy=False)),
        "python": _plain(random.getstate()),
        "generators": {name: generator.get_state() for name, generator in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_states(state: Mapping[str, Any], generators: Mapping[str, torch.Generator]) -> None:
    """Set the generators captured by ``capture_rng_states``."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------------------------- envs
def _digest(observation: Any) -> str:
    """A digest of an observation's bytes, dtype and shape (``repr`` for non-arrays)."""
    array = np.asarray(observation)
    if array.dtype == object:
        return hashlib.sha256(repr(observation).encode()).hexdigest()
    header = f"{array.dtype.str}{array.shape}".encode()
    return hashlib.sha256(header + np.ascontiguousarray(array).tobytes()).hexdigest()


def _emulator_state(env: gym.Env) -> torch.Tensor | None:
    """ALE keeps game state and its own RNG (sticky actions) across resets, where no seed
    reaches them: a snapshot of its emulator (``clone_state(include_rng=True)``), as bytes.
    None for other envs."""
    unwrapped = env.unwrapped
    if not type(unwrapped).__module__.startswith("ale_py"):
        return None
    data = unwrapped.clone_state(include_rng=True).serialize()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def _restore_emulator_state(env: gym.Env, state: torch.Tensor) -> None:
    import ale_py

    env.unwrapped.restore_state(ale_py.ALEState(state.numpy().tobytes()))


class EpisodeRecorder(gym.Wrapper):
    """Keeps how the current episode began and the actions since, to replay it on resume.

    The outermost wrapper of each training sub-env (see the module docstring). Its
    ``episode_record()`` is plain data; ``replay_request`` set to such a record followed by
    ``replay()`` brings a fresh env to the recorded state.

    Example:
        >>> env = EpisodeRecorder(gym.make("CartPole-v1"))
        >>> _ = env.reset(seed=3); _ = env.step(1)
        >>> twin = EpisodeRecorder(gym.make("CartPole-v1"))
        >>> twin.replay_request = env.episode_record()
        >>> twin.replay()
        True
    """

    MAX_REPLAY_ACTIONS = 100_000  # per episode: memory, checkpoint size and replay time

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.replayable = True  # False once the episode outgrew MAX_REPLAY_ACTIONS
        self.episode_seed: int | None = None
        self.episode_rng_state: dict[str, Any] | None = None
        self.episode_emulator_state: torch.Tensor | None = None
        self.episode_actions: list[Any] = []
        self.episode_over = False
        self.reset_pending = False
        self.replay_request: dict[str, Any] | None = None
        self._last_observation: Any = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.episode_seed = seed
        unseeded = seed is None
        self.episode_rng_state = (
            _generator_state(self.env.unwrapped.np_random) if unseeded else None
        )
        self.episode_emulator_state = _emulator_state(self.env) if unseeded else None
        self.episode_actions = []
        self.replayable = True
        self.episode_over = self.reset_pending = False
        observation, info = self.env.reset(seed=seed, options=options)
        self._last_observation = observation
        return observation, info

    def step(self, action: Any):
        if self.reset_pending:  # the autoreset the vector env owed before the checkpoint
            observation, info = self.reset()
            return observation, 0.0, False, False, info
        if self.replayable and len(self.episode_actions) < self.MAX_REPLAY_ACTIONS:
            self.episode_actions.append(np.array(action, copy=True))
        elif self.replayable:  # too long to replay: stop recording this episode
            self.episode_actions, self.replayable = [], False
        observation, reward, terminated, truncated, info = self.env.step(action)
        self.episode_over = bool(terminated or truncated)
        self._last_observation = observation
        return observation, reward, terminated, truncated, info

    def episode_record(self) -> dict[str, Any]:
        """This episode's start, actions and end state, as plain data."""
        actions = None
        if self.episode_actions and self.replayable:
            stacked = np.stack([np.asarray(action) for action in self.episode_actions])
            if stacked.dtype == object:
                raise CheckpointError(
                    f"cannot checkpoint actions of type {type(self.episode_actions[0]).__name__}"
                    " (only array actions can be replayed)"
                )
            actions = torch.from_numpy(stacked)
        return {
            "seed": self.episode_seed,
            "rng_state": self.episode_rng_state,
            "emulator_state": self.episode_emulator_state,
            "actions": actions,
            "episode_over": self.episode_over or self.reset_pending,
            "observation_digest": _digest(self._last_observation),
            "action_space_rng": _generator_state(self.env.action_space.np_random),
            "replayable": self.replayable,
        }

    def replay(self) -> bool:
        """Bring the env to ``replay_request``'s state; True if the last observation matches."""
        record, self.replay_request = self.replay_request, None
        if record is None:
            raise RuntimeError("EpisodeRecorder.replay needs replay_request set to a record")
        if record["seed"] is not None:
            observation, _ = self.env.reset(seed=record["seed"])
        else:
            if record["emulator_state"] is not None:
                _restore_emulator_state(self.env, record["emulator_state"])
            self.env.unwrapped.np_random = _generator_from_state(record["rng_state"])
            observation, _ = self.env.reset()
        actions = [] if record["actions"] is None else list(record["actions"].numpy())
        for action in actions:
            observation, *_ = self.env.step(action)
        self.replayable = bool(record.get("replayable", True))
        self.env.action_space.np_random.bit_generator.state = dict(record["action_space_rng"])
        self.episode_seed, self.episode_rng_state = record["seed"], record["rng_state"]
        self.episode_emulator_state = record["emulator_state"]
        self.episode_actions = actions
        self.episode_over = self.reset_pending = bool(record["episode_over"])
        self._last_observation = observation
        return self.replayable and _digest(observation) == record["observation_digest"]


@dataclass(frozen=True)
class RecordingFactory:
    """An env factory whose envs are wrapped in ``EpisodeRecorder``.

    Args:
        factory (callable): makes one env.
        ignore_signals (bool): ignore SIGINT and SIGTERM in the process that makes the env
            (for AsyncVectorEnv workers: the main process handles them and stops cleanly,
            and the workers exit when it closes their pipes).
    """

    factory: EnvFactory
    ignore_signals: bool = False

    def __call__(self) -> EpisodeRecorder:
        if self.ignore_signals and threading.current_thread() is threading.main_thread():
            for number in StopOnSignals.SIGNALS:  # SIGINT, SIGTERM, SIGHUP: the main decides
                signal.signal(number, signal.SIG_IGN)
        return EpisodeRecorder(self.factory())


def _episode_statistics(stats: RecordEpisodeStatistics) -> dict[str, Any]:
    return {
        "episode_returns": torch.from_numpy(np.array(stats.episode_returns)),
        "episode_lengths": torch.from_numpy(np.array(stats.episode_lengths)),
        "prev_dones": torch.from_numpy(np.array(stats.prev_dones)),
        "episode_count": int(stats.episode_count),
        "return_queue": torch.tensor(list(stats.return_queue), dtype=torch.float64),
        "length_queue": torch.tensor(list(stats.length_queue), dtype=torch.int64),
    }


def _restore_episode_statistics(stats: RecordEpisodeStatistics, state: Mapping[str, Any]) -> None:
    stats.episode_returns = state["episode_returns"].numpy().copy()
    stats.episode_lengths = state["episode_lengths"].numpy().copy()
    stats.prev_dones = state["prev_dones"].numpy().copy()
    stats.episode_count = int(state["episode_count"])
    maxlen = stats.return_queue.maxlen
    stats.return_queue = deque(state["return_queue"].numpy().tolist(), maxlen=maxlen)
    stats.length_queue = deque(state["length_queue"].numpy().tolist(), maxlen=maxlen)


def capture_env_state(envs: VectorEnvs, collector: RolloutCollector) -> dict[str, Any]:
    """The training envs' state between two rollouts, as plain data."""
    vector_env = envs.env.unwrapped
    try:
        sub_envs = list(vector_env.call("episode_record"))
    except AttributeError:
        raise CheckpointError(
            "the training envs do not record their episodes (make them with RecordingFactory)"
        ) from None
    reward_normalizer = envs.reward_normalizer
    return {
        "num_envs": envs.num_envs,
        "sub_envs": sub_envs,
        "episode_statistics": _episode_statistics(envs.episode_stats),
        "obs_normalizer": None
        if envs.obs_normalizer is None
        else FrozenObservationNormalizer.from_wrapper(envs.obs_normalizer).state_dict(),
        "reward_normalizer": None
        if reward_normalizer is None
        else {
            **reward_statistics(reward_normalizer),
            "accumulated_reward": torch.from_numpy(np.array(reward_normalizer.accumulated_reward)),
            "prev_dones": torch.from_numpy(np.array(reward_normalizer._prev_dones)),
        },
        "collector": collector.state_dict(),
    }


def restore_env_state(
    envs: VectorEnvs, collector: RolloutCollector, state: Mapping[str, Any]
) -> list[int]:
    """Bring freshly reset training envs to a state from ``capture_env_state``.

    Returns:
        list[int]: the sub-envs whose replay did not reproduce the saved last observation.
    """
    if state["num_envs"] != envs.num_envs:
        raise CheckpointError(
            f"the checkpoint holds {state['num_envs']} envs, the run has {envs.num_envs}"
        )
    vector_env = envs.env.unwrapped
    vector_env.set_attr("replay_request", list(state["sub_envs"]))
    reproduced = vector_env.call("replay")
    _restore_episode_statistics(envs.episode_stats, state["episode_statistics"])
    if envs.obs_normalizer is not None and state["obs_normalizer"] is not None:
        FrozenObservationNormalizer.from_state_dict(state["obs_normalizer"]).restore_into(
            envs.obs_normalizer
        )
    saved_rewards = state["reward_normalizer"]
    if envs.reward_normalizer is not None and saved_rewards is not None:
        restore_reward_statistics(envs.reward_normalizer, saved_rewards)
        envs.reward_normalizer.accumulated_reward = (
            saved_rewards["accumulated_reward"].numpy().copy()
        )
        envs.reward_normalizer._prev_dones = saved_rewards["prev_dones"].numpy().copy()
    collector.load_state_dict(state["collector"])
    return [index for index, same in enumerate(reproduced) if not same]


# ------------------------------------------------------------------------------- agent
def build_checkpoint(
    agent: TRPO, envs: VectorEnvs, collector: RolloutCollector, seconds: float
) -> dict[str, Any]:
    """Everything ``agent`` needs to continue training exactly, as plain data."""
    env_state = capture_env_state(envs, collector)
    model = agent.state_dict()
    model["obs_normalizer"] = env_state["obs_normalizer"]
    if envs.reward_normalizer is not None:
        model["reward_statistics"] = reward_statistics(envs.reward_normalizer)
    return {
        "format": CHECKPOINT_FORMAT,
        "config": agent.config.model_dump(mode="json"),
        "model": model,
        "policy_optimizer": agent.policy_optimizer.state_dict(),
        "value_optimizer": agent.value_optimizer.state_dict(),
        "rng": capture_rng_states(_agent_generators(agent)),
        "envs": env_state,
        "progress": {
            "step": agent.step,
            "iteration": agent.iteration,
            "time": seconds,
            "last_evaluation": agent.last_evaluation,
        },
    }


def _agent_generators(agent: TRPO) -> dict[str, torch.Generator]:
    return {"action": agent.action_generator, "shuffle": agent.shuffle_generator}


RANK_STATES = "rank_states"  # checkpoint key: [{"envs", "rng"}] of ranks 1 .. K-1


def rank_checkpoint(checkpoint: dict[str, Any], rank: int) -> dict[str, Any]:
    """The checkpoint as rank ``rank`` of a job restores it: its own envs and RNGs."""
    if rank == 0:
        return checkpoint
    return {**checkpoint, **checkpoint[RANK_STATES][rank - 1]}


def restore_agent(agent: TRPO, checkpoint: Mapping[str, Any]) -> None:
    """Load networks, optimizers, statistics, RNGs and counters of ``checkpoint`` into a
    freshly built ``agent`` (its envs are restored when ``learn`` starts)."""
    model = checkpoint["model"]
    try:
        agent.policy.load_state_dict(model["policy"])
        agent.value.load_state_dict(model["value"])
    except RuntimeError as error:
        raise CheckpointError(
            f"the checkpoint's networks do not fit this agent: {_first_line(error)}"
        ) from None
    agent.policy_optimizer.load_state_dict(checkpoint["policy_optimizer"])
    agent.value_optimizer.load_state_dict(checkpoint["value_optimizer"])
    if model["obs_normalizer"] is not None:
        agent.obs_normalizer = FrozenObservationNormalizer.from_state_dict(model["obs_normalizer"])
    agent.reward_statistics = model["reward_statistics"]
    progress = checkpoint["progress"]
    agent.step, agent.iteration = int(progress["step"]), int(progress["iteration"])
    agent.last_evaluation = progress["last_evaluation"]
    restore_rng_states(checkpoint["rng"], _agent_generators(agent))


def restore_training_state(
    agent: TRPO, envs: VectorEnvs, collector: RolloutCollector, checkpoint: Mapping[str, Any]
) -> list[int]:
    """At the start of ``learn`` after a resume: restore the freshly reset training envs,
    then the RNGs. Returns the sub-envs whose replay did not reproduce their state."""
    diverged = restore_env_state(envs, collector, checkpoint["envs"])
    restore_rng_states(checkpoint["rng"], _agent_generators(agent))
    return diverged


def load_run(
    run_dir: str | Path, total_steps: int | None = None, restart: bool = False
) -> tuple[TRPOConfig, dict[str, Any] | None, Path | None]:
    """The config of a run directory (its config.yaml, ``run_dir`` set to where it is now,
    ``total_steps`` replaced if given) and its latest checkpoint with its path, or
    ``(config, None, None)`` when it has no checkpoint yet.

    A directory with a final model.pt but no checkpoint (a finished run whose checkpoints
    were deleted) is refused unless ``restart``: starting afresh would drop its rows, its
    evaluations and its model."""
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
    if found is None and (run_dir / MODEL_FILE).is_file() and not restart:
        raise CheckpointError(
            f"{str(run_dir)!r} holds a finished run ({MODEL_FILE}) but no checkpoint to "
            f"continue from: resuming would start afresh and drop its metrics, evaluations and "
            f"{MODEL_FILE}; train into another run_dir, or pass --restart "
            "(TRPO.resume(..., restart=True)) to start this one afresh"
        )
    if found is None:
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


class Checkpointer:
    """Writes the checkpoints of one ``learn`` call into ``directory``.

    Args:
        agent (TRPO): the agent being trained.
        directory (Path): the run directory.
        envs (VectorEnvs): the training envs (made with ``RecordingFactory``).
        collector (RolloutCollector): the rollout collector stepping them.
        every (int): iterations between checkpoints; 0 = only when asked (end, signal).
    """

    def __init__(
        self,
        agent: TRPO,
        directory: str | Path,
        envs: VectorEnvs,
        collector: RolloutCollector,
        every: int,
    ) -> None:
        self.agent, self.directory = agent, Path(directory)
        self.envs, self.collector, self.every = envs, collector, every
        self.saved_iteration: int | None = None
        remove_stale_temporaries(self.directory)  # left by a run killed while writing

    def due(self) -> bool:
        return self.every > 0 and self.agent.iteration % self.every == 0

    def save(self, seconds: float) -> Path:
        """Write a checkpoint of the current state (once per iteration). In a job every
        rank calls it at the same iteration: each sends its envs' and RNGs' state to the
        main rank, which writes one checkpoint for the job (its own state where a single
        process keeps it, the others' under ``"rank_states"``, and ``"world_size"``).

        Raises:
            CheckpointWriteError: the file system refused the write (disk full, read-only);
                the checkpoints already there are intact.
        """
        path = self.directory / CHECKPOINT_FILE
        if self.saved_iteration != self.agent.iteration:
            comm = self.agent.comm
            own = None
            if comm.world_size > 1:
                own = {
                    "envs": capture_env_state(self.envs, self.collector),
                    "rng": capture_rng_states(_agent_generators(self.agent)),
                }
            rank_states = comm.gather_to_main(own)
            if not comm.is_main:
                self.saved_iteration = self.agent.iteration
                return path
            state = build_checkpoint(self.agent, self.envs, self.collector, seconds)
            if comm.world_size > 1:
                assert rank_states is not None
                state["world_size"] = len(rank_states)
                state[RANK_STATES] = rank_states[1:]
            try:
                write_checkpoint(state, self.directory)
            except OSError as error:
                raise CheckpointWriteError(
                    f"cannot write the checkpoint of iteration {self.agent.iteration} to "
                    f"{str(self.directory)!r}: {error.strerror or error}; the checkpoints "
                    "already there are intact"
                ) from error
            self.saved_iteration = self.agent.iteration
        return path


class StopOnSignals:
    """While installed (in the main thread), the first SIGINT, SIGTERM or SIGHUP asks for a stop at
    the end of the current iteration (``signal_name`` becomes ``"SIGINT"``/``"SIGTERM"``);
    a second one raises KeyboardInterrupt at once. ``uninstall`` restores the previous
    handlers.

    Args:
        active (bool): with False, ``install`` does nothing (default: True).
    """

    # SIGHUP: the terminal was closed (an ssh session dropped): stop as for SIGTERM.
    SIGNALS = (
        signal.SIGINT,
        signal.SIGTERM,
        *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []),
    )

    def __init__(self, active: bool = True) -> None:
        self.active = active
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> StopOnSignals:
        if self.active and threading.current_thread() is threading.main_thread():
            for number in self.SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def uninstall(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def __enter__(self) -> StopOnSignals:
        return self.install()

    def __exit__(self, *exc_info: object) -> None:
        self.uninstall()

    def _handle(self, number: int, frame: object) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(number).name
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            print(
                f"trpo: {self.signal_name} received: stopping after this iteration with a "
                "checkpoint (send it again to stop at once)",
                file=sys.stderr,
                flush=True,
            )
