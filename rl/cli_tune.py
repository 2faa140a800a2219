"""The ``trpo tune`` command line; the study itself is run by ``rl.tune`` (Optuna is
imported only when a study runs)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["add_tune_parser"]

TUNE_HELP = """\
Search hyperparameters with Optuna: TPE (multivariate) sampling over the search space,
median pruning on the evaluations made during each trial, trials in parallel processes of
one torch thread each. A trial trains its config for --budget env steps on each of
--seeds seeds (the config's seed, +1, ...); its value, maximised, is the mean over the
seeds of the deterministic evaluation return at the budget (eval_episodes episodes).
The study directory holds Optuna's journal, one trpo train run directory per trial and
seed (trpo eval and trpo plot work on them) and best.yaml, the best trial's full config
(trpo train best.yaml), whose header names the seeds used while tuning: evaluate on others.
Killed, even with SIGKILL, the study stops its trials with it; --resume continues it,
taking over the interrupted trials from their checkpoints."""


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
        return value

    return parse


def add_tune_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``trpo tune`` to the subcommands of ``trpo``."""
    tune = commands.add_parser(
        "tune",
        help="search hyperparameters with Optuna; writes a study directory",
        description=TUNE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tune.add_argument(
        "target",
        metavar="ENV_ID_OR_CONFIG_FILE",
        nargs="?",
        help="the env id or config file to tune, as for trpo train",
    )
    tune.add_argument(
        "--resume",
        metavar="STUDY_DIR",
        help="continue a study with its own settings (with --quiet only)",
    )
    for flag, kind, metavar, text in (
        ("--trials", int, "N", "the study's trials in all (default 50)"),
        ("--budget", int, "STEPS", "env steps per trial and seed (default: config total_steps)"),
        ("--seeds", int, "K", "seeds per trial (default 1)"),
        ("--jobs", int, "J", "trials at once (default: the cores available)"),
        ("--timeout", float, "SECONDS", "start no trial after this; running ones finish"),
    ):
        tune.add_argument(flag, type=_positive(kind), metavar=metavar, help=text)
    tune.add_argument("--study-dir", help="default: studies/ENV-TIME")
    tune.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config field, fixed: out of the search space (repeatable)",
    )
    tune.add_argument(
        "--space",
        metavar="FILE.yaml",
        help="search-space changes (format: rl/tune_space.py, README)",
    )
    tune.add_argument("--quiet", action="store_true", help="print only the final summary")
    tune.set_defaults(handler=_tune)


def _tune(args: argparse.Namespace) -> int:
    from rl.tune import tune_command  # optuna only when a study runs

    return tune_command(args)
