"""A ``trpo tune`` study directory: the Optuna journal, the trials' run directories and
``best.yaml``; shared by the tuning process and its trial processes.

    STUDY_DIR/journal.log          Optuna's JournalStorage (every trial, value, parameter)
    STUDY_DIR/trials/NNNN-seedS/   a ``trpo train`` run directory per trial and seed
    STUDY_DIR/trials/NNNN.log      what trial NNNN printed
    STUDY_DIR/best.yaml            the best trial's config: ``trpo train best.yaml``

The study's settings (env, base config, space, budget, seeds, ...) are its user attribute
``settings``; ``seeds_used``, the training seeds of every trial, is one too (and a comment
of best.yaml): evaluate a tuned config on other seeds.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from typing import Any

import optuna
import yaml

from rl.config import TRPOConfig, merge_dicts
from rl.run_files import atomic_write_text
from rl.tune_space import to_config

try:  # optuna >= 4.0
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
except ImportError:  # pragma: no cover - optuna 3.x
    from optuna.storages import JournalFileOpenLock
    from optuna.storages import JournalFileStorage as JournalFileBackend

__all__ = [
    "BEST_FILE",
    "JOURNAL_FILE",
    "STUDY_NAME",
    "best_trial",
    "load_study",
    "repair_journal",
    "trial_config",
    "trial_run_dir",
    "write_best",
]

JOURNAL_FILE = "journal.log"
BEST_FILE = "best.yaml"
STUDY_NAME = "trpo-tune"
STARTUP_TRIALS = 5  # random trials before TPE, and before the median pruner prunes
EVALUATIONS = 5  # evaluations per seed of a trial, the last at the budget (for pruning)


def _storage(study_dir: str | Path) -> optuna.storages.JournalStorage:
    path = str(Path(study_dir) / JOURNAL_FILE)
    return optuna.storages.JournalStorage(JournalFileBackend(path, JournalFileOpenLock(path)))


def load_study(study_dir: str | Path) -> optuna.Study:
    """The study of ``study_dir``, created if new: TPE (multivariate) and a median pruner
    that waits for a third of the first seed's budget."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(n_startup_trials=STARTUP_TRIALS, multivariate=True)
    study = optuna.create_study(
        storage=_storage(study_dir),
        study_name=STUDY_NAME,
        direction="maximize",
        sampler=sampler,
        load_if_exists=True,
    )
    budget = study.user_attrs.get("settings", {}).get("budget", 0)
    study.pruner = optuna.pruners.MedianPruner(STARTUP_TRIALS, n_warmup_steps=budget // 3)
    return study


def repair_journal(study_dir: str | Path) -> None:
    """After a killed study (its lock held by the caller): no stale journal lock, no half
    written last line."""
    path = Path(study_dir) / JOURNAL_FILE
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{path}.lock")
    if path.is_file():
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(path, "r+b") as file:
                file.truncate(data.rfind(b"\n") + 1)


def trial_run_dir(study_dir: str | Path, number: int, seed: int) -> Path:
    return Path(study_dir) / "trials" / f"{number:04d}-seed{seed}"


def trial_config(
    settings: dict[str, Any], values: dict[str, Any], seed: int, run_dir: Path
) -> TRPOConfig:
    """The config of one seed of a trial: base ← sampled values ← budget, seed, run dir,
    an evaluation every budget / EVALUATIONS steps (unless fixed) and one torch thread."""
    base = settings["base"]
    data = merge_dicts(base, to_config(values, base["num_envs"]))
    budget = settings["budget"]
    data |= {"total_steps": budget, "seed": seed, "run_dir": str(run_dir), "torch_threads": 1}
    if "eval_every" not in settings["fixed"]:
        data["eval_every"] = max(1, budget // EVALUATIONS)
    return TRPOConfig.from_dict(data)


def best_trial(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """The complete trial of the highest value (the first of equals), if any."""
    complete = [trial for trial in trials if trial.state == optuna.trial.TrialState.COMPLETE]
    return max(complete, key=lambda trial: trial.value) if complete else None


def write_best(study: optuna.Study, study_dir: str | Path) -> optuna.trial.FrozenTrial | None:
    """Write best.yaml (atomically) for the best complete trial; returns it."""
    best = best_trial(study.get_trials(deepcopy=False))
    if best is None:
        return None
    settings = study.user_attrs["settings"]
    data = merge_dicts(
        settings["base"], to_config(best.user_attrs["values"], settings["base"]["num_envs"])
    )
    config = TRPOConfig.from_dict(data).model_dump(mode="json")
    config.pop("run_dir")
    header = (
        f"# trpo tune: trial {best.number} of {Path(study_dir).resolve()}, value "
        f"{best.value:.2f}: mean deterministic return at {settings['budget']} steps\n"
        f"# seeds used while tuning: {study.user_attrs['seeds_used']} (evaluate on others)\n"
    )
    atomic_write_text(Path(study_dir) / BEST_FILE, header + yaml.safe_dump(config, sort_keys=False))
    return best
