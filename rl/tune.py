"""``trpo tune``: an Optuna study of TRPO hyperparameters in a study directory.

A new study's first trial is the base config itself (its values that the space holds), so
that the study measures its starting point on its own seeds and budget. The tuning process
samples each other trial's parameters (``rl.tune_space``), runs the trial in a
child process (``rl.tune_trial``, which dies with it), at most ``jobs`` at once, and keeps
``best.yaml`` up to date (``rl.tune_study``). A study killed at any moment continues with
``trpo tune --resume STUDY_DIR``: its completed trials stay, the trials it left running
are taken over from their run directories' checkpoints.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from rl.cli_train import UsageError, config_data
from rl.config import ConfigError, TRPOConfig, flatten_dict, parse_overrides
from rl.run_lock import hold_run_dir
from rl.tune_space import baseline_params, fit_budget, load_space, space_fields, suggest
from rl.tune_study import (
    BEST_FILE,
    JOURNAL_FILE,
    best_trial,
    load_study,
    repair_journal,
    write_best,
)
from rl.tune_trial import run_trial
from rl.tune_view import TuneView, describe_values

__all__ = ["tune_command"]

DEFAULT_TRIALS = 50
STOP_SECONDS = 120  # a stopped trial's wait for its checkpoint, then it is killed
POLL_SECONDS = 0.5


def tune_command(args: argparse.Namespace) -> int:
    """``trpo tune ENV_ID_OR_CONFIG ...`` or ``trpo tune --resume STUDY_DIR``."""
    if args.resume is not None:
        return _resume(args)
    if args.target is None:
        raise UsageError("ENV_ID_OR_CONFIG_FILE is required (or --resume STUDY_DIR)")
    settings, seeds = _new_settings(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    study_dir = Path(args.study_dir or f"studies/{settings['env_id'].replace('/', '_')}-{stamp}")
    study_dir.mkdir(parents=True, exist_ok=True)
    with hold_run_dir(study_dir):
        repair_journal(study_dir)
        study = load_study(study_dir)
        stored = study.user_attrs.get("settings")
        if stored is not None:
            _check_same_study(
                stored, settings, study.user_attrs.get("seeds_used"), seeds, study_dir
            )
        study.set_user_attr("settings", settings)
        study.set_user_attr("seeds_used", seeds)
        if not study.get_trials(deepcopy=False):  # a new study starts from the base config
            params, left = baseline_params(settings["space"], settings["base"])
            study.enqueue_trial(params, user_attrs={"base_config": True})
            for why in left:  # trial 0 is then not quite the base config: say so
                print(f"trpo tune: trial 0 (the base config) draws {why}", file=sys.stderr)
        return _run(study, study_dir, settings, args.quiet)


def _resume(args: argparse.Namespace) -> int:
    given = [
        f"--{name.replace('_', '-')}"
        for name in ("trials", "budget", "seeds", "jobs", "study_dir", "timeout", "set", "space")
        if getattr(args, name)
    ]
    if args.target is not None or given:
        extra = ", ".join(["ENV_ID_OR_CONFIG_FILE"] * (args.target is not None) + given)
        raise UsageError(
            f"--resume continues a study with its own settings: {extra} cannot "
            "be given with it (only --quiet)"
        )
    study_dir = Path(args.resume)
    if not (study_dir / JOURNAL_FILE).is_file():
        raise UsageError(f"--resume {args.resume!r}: no study there (no {JOURNAL_FILE})")
    with hold_run_dir(study_dir):
        repair_journal(study_dir)
        study = load_study(study_dir)
        if "settings" not in study.user_attrs:
            raise UsageError(f"--resume {args.resume!r}: the study has no trpo tune settings")
        return _run(study, study_dir, study.user_attrs["settings"], args.quiet)


def _new_settings(args: argparse.Namespace) -> tuple[dict[str, Any], list[int]]:
    """The study's settings from the command line, and its training seeds."""
    merged, _, _ = config_data(args.target, args.set, {}, "default")
    base = TRPOConfig.from_dict(merged)
    fixed = sorted(flatten_dict(parse_overrides(args.set)))
    space = {
        name: spec
        for name, spec in load_space(args.space).items()
        if not set(space_fields(name)) & set(fixed)
    }
    budget = args.budget or base.total_steps
    if "steps_per_env" not in space and budget < base.steps_per_iteration:
        raise ConfigError(
            f"--budget {budget} is smaller than one iteration "
            f"(steps_per_iteration = {base.steps_per_iteration})"
        )
    settings = {
        "env_id": base.env_id,
        "base": base.model_dump(mode="json", exclude={"run_dir"}),
        "space": fit_budget(space, budget, base.num_envs),
        "fixed": fixed,
        "budget": budget,
        "trials": args.trials or DEFAULT_TRIALS,
        "jobs": args.jobs or _cores(),
        "timeout": args.timeout,
    }
    return settings, [base.seed + index for index in range(args.seeds or 1)]


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover


def _check_same_study(
    stored: dict[str, Any],
    new: dict[str, Any],
    stored_seeds: list[int],
    seeds: list[int],
    study_dir: Path,
) -> None:
    """A study directory continues only the same study (more trials, other jobs/timeout)."""
    where = f"--study-dir {str(study_dir)!r}"
    if stored["env_id"] != new["env_id"]:
        raise UsageError(
            f"{where} holds a study of env_id = {stored['env_id']!r}, not "
            f"{new['env_id']!r}: choose another --study-dir"
        )
    differ = [key for key in ("base", "space", "fixed", "budget") if stored[key] != new[key]]
    differ += ["seeds"] * (stored_seeds != seeds)
    if differ:
        raise UsageError(
            f"{where} holds a study with another {differ[0]}: continue it with "
            f"trpo tune --resume {study_dir}, or choose another --study-dir"
        )


def _run(study: optuna.Study, study_dir: Path, settings: dict[str, Any], quiet: bool) -> int:
    """Run trials until the study has ``trials`` of them (or the timeout passed)."""
    if not quiet:
        print(f"trpo tune: {settings['env_id']}, {settings['trials']} trials of "
              f"{settings['budget']} steps, {settings['jobs']} at once; study in {study_dir}",
              flush=True)  # fmt: skip
    view = TuneView("quiet" if quiet else "auto", settings["trials"])
    timeout = settings["timeout"]
    deadline = time.monotonic() + timeout if timeout else math.inf
    # trials a killed study left running: taken over first
    orphans = [trial._trial_id for trial in study.get_trials(states=(TrialState.RUNNING,))]
    running: dict[int, mp.process.BaseProcess] = {}
    best_number = None
    try:
        with _stop_signals_as_interrupt():
            while True:
                _reap(study, running)
                trials = study.get_trials(deepcopy=False)
                while len(running) < settings["jobs"]:
                    if orphans:
                        trial_id = orphans.pop(0)
                    elif len(trials) < settings["trials"] and time.monotonic() < deadline:
                        trial_id = _ask(study, settings)
                        trials = study.get_trials(deepcopy=False)
                    else:
                        break
                    running[trial_id] = _start(study_dir, trial_id)
                view.update(trials)
                best = best_trial(trials)
                if best is not None and best.number != best_number:
                    best_number = write_best(study, study_dir).number
                if not running:
                    break
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        _stop(running)
        view.finish(_summary(study, study_dir, "interrupted"))
        print(
            f"trpo tune: interrupted; continue with: trpo tune --resume {study_dir}",
            file=sys.stderr,
        )
        return 130
    view.finish(_summary(study, study_dir, "done"))
    return 0


def _ask(study: optuna.Study, settings: dict[str, Any]) -> int:
    """A new trial with its sampled values (user attribute ``values``); its id."""
    trial = study.ask()
    trial.set_user_attr("values", suggest(trial, settings["space"]))
    return trial._trial_id


def _start(study_dir: Path, trial_id: int) -> mp.process.BaseProcess:
    process = mp.get_context("spawn").Process(
        target=run_trial, args=(str(study_dir), trial_id, os.getpid()), name=f"trial-{trial_id}"
    )
    process.start()
    return process


def _reap(study: optuna.Study, running: dict[int, mp.process.BaseProcess]) -> None:
    """Forget the trial processes that ended; one that died without telling the study its
    trial's end (a crash) fails its trial."""
    for trial_id, process in list(running.items()):
        if process.exitcode is None:
            continue
        del running[trial_id]
        trial = study._storage.get_trial(trial_id)
        if trial.state == TrialState.RUNNING:
            reason = f"its process ended with exit code {process.exitcode}"
            optuna.Trial(study, trial_id).set_user_attr("error", reason)
            study.tell(trial.number, state=TrialState.FAIL)


def _stop(running: dict[int, mp.process.BaseProcess]) -> None:
    """SIGTERM each trial (it stops after its iteration with a checkpoint), then wait."""
    for process in running.values():
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    for process in running.values():
        process.join(max(0.0, deadline - time.monotonic()))
        if process.exitcode is None:
            process.kill()
            process.join()


@contextlib.contextmanager
def _stop_signals_as_interrupt() -> Iterator[None]:
    """SIGINT (even where it was ignored when the study started, e.g. ``trpo tune ... &``),
    SIGTERM and SIGHUP stop the study as Ctrl-C does."""

    def interrupt(number: int, frame: object) -> None:
        raise KeyboardInterrupt

    numbers = [
        signal.SIGINT,
        signal.SIGTERM,
        *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []),
    ]
    previous = {number: signal.signal(number, interrupt) for number in numbers}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _summary(study: optuna.Study, study_dir: Path, how: str) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = Counter(trial.state for trial in trials)
    line = (
        f"{how}: {len(trials)} trials ({counts[TrialState.COMPLETE]} complete, "
        f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed, "
        f"{counts[TrialState.RUNNING]} to resume)"
    )
    best = best_trial(trials)
    if best is None:
        return f"{line}; no trial complete yet"
    values = describe_values(best.user_attrs["values"])
    return f"{line}; best {best.value:.2f} (trial {best.number}): {values}; {study_dir / BEST_FILE}"
