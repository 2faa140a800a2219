"""One trial of ``trpo tune``, in a child process of the tuning process that dies with it.

The child trains the trial's config on each seed of the study in turn (a run directory
each), reports every evaluation to Optuna (seed k's evaluation at step s as step
k x budget + s) and stops when the median pruner says so. Its value is the mean over the
seeds of the deterministic evaluation at the budget. A trial left running by a killed
study is taken over: seeds already done are kept (user attribute ``seed_returns``), the
others resume from their checkpoint.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import statistics
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import torch

from rl.config import TRPOConfig
from rl.errors import first_line
from rl.progress import Progress
from rl.run_files import CONFIG_FILE, CheckpointError
from rl.trpo import TRPO
from rl.tune_study import load_study, trial_config, trial_run_dir

__all__ = ["run_trial"]

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when ``parent_pid`` dies, however it dies (Linux's
    PR_SET_PDEATHSIG; elsewhere a thread that checks the parent every second)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:  # pragma: no cover
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:  # it died before prctl
        os._exit(1)


def _watch_parent(parent_pid: int) -> None:  # pragma: no cover - not Linux
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(1)


def run_trial(study_dir: str, trial_id: int, parent_pid: int) -> None:
    """The target of the trial's process: run the trial and tell the study its end."""
    die_with_parent(parent_pid)
    if hasattr(os, "setpgrp"):  # Ctrl-C reaches the tuning process only: it stops trials
        os.setpgrp()
    study = load_study(study_dir)
    trial = optuna.Trial(study, trial_id)
    log = trial_run_dir(study_dir, trial.number, 0).parent / f"{trial.number:04d}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as output:
        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", UserWarning)  # optuna's "step already reported" on takeover
    trial.set_user_attr("pid", os.getpid())
    try:
        _tell(study, trial, _run_seeds(study, trial, study.user_attrs["settings"], Path(study_dir)))
    except Exception as error:
        print(f"trial {trial.number} failed: {error!r}", flush=True)
        trial.set_user_attr("error", first_line(error))
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise SystemExit(1) from None
    finally:  # multiprocessing ends its children with os._exit: the value-fit process too
        atexit._run_exitfuncs()


def _tell(study: optuna.Study, trial: optuna.Trial, outcome: float | str | None) -> None:
    if outcome == "pruned":
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    elif isinstance(outcome, float):
        study.tell(trial, outcome)
    # None, stopped by a signal: the trial stays running, for --resume to take over


def _run_seeds(
    study: optuna.Study, trial: optuna.Trial, settings: dict[str, Any], study_dir: Path
) -> float | str | None:
    """The mean return over the seeds, ``"pruned"``, or None when a signal stopped it."""
    returns = dict(trial.user_attrs.get("seed_returns", {}))
    values = trial.user_attrs["values"]
    for index, seed in enumerate(study.user_attrs["seeds_used"]):
        if str(seed) in returns:
            continue
        run_dir = trial_run_dir(study_dir, trial.number, seed)
        agent = _start(trial_config(settings, values, seed, run_dir))
        total = agent.config.total_steps
        try:
            if agent.step < total:
                # a Progress, not a callback: the value fit runs beside the next rollout
                progress = _Reporter(trial, index * settings["budget"], total)
                agent.learn(progress=progress, final_evaluation=True)
            elif (agent.last_evaluation or {}).get("step") != agent.step:  # finished, killed
                stats = agent.evaluate(agent.config.eval_episodes)  # before its evaluation
                agent.last_evaluation = {"step": agent.step, **stats}
        except _Pruned:
            return "pruned"
        finally:
            agent.close()
        if agent.stopped_by is not None:
            return None
        returns[str(seed)] = agent.last_evaluation["mean_return"]
        trial.set_user_attr("seed_returns", returns)
    return statistics.fmean(returns.values())


class _Pruned(Exception):
    """The median pruner stopped the trial."""


class _Reporter(Progress):
    """Reports each evaluation to Optuna (at ``offset`` + its step); raises ``_Pruned`` when
    the pruner says so before the budget."""

    def __init__(self, trial: optuna.Trial, offset: int, total_steps: int) -> None:
        super().__init__(total_steps)
        self.trial, self.offset = trial, offset

    def evaluation(self, row: dict[str, Any]) -> None:
        self.trial.report(row["mean_return"], self.offset + row["step"])
        if row["step"] < self.total_steps and self.trial.should_prune():
            raise _Pruned


def _start(config: TRPOConfig) -> TRPO:
    """A fresh agent, or the one whose run directory a killed study left behind."""
    run_dir = Path(config.run_dir)
    if (run_dir / CONFIG_FILE).is_file():
        try:
            return TRPO.resume(run_dir, restart=True)
        except CheckpointError:
            shutil.rmtree(run_dir)
    return TRPO(config)
