"""The ``trpo`` command: ``train``, ``tune``, ``eval``, ``export``, ``presets`` and ``plot``
(``trpo COMMAND --help``). Invalid arguments or config values exit with code 2 and one line
on stderr naming the field and the value."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import pickle
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import gymnasium as gym
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from rl.cli_train import UsageError, train_command
from rl.cli_tune import add_tune_parser
from rl.config import ConfigError, TRPOConfig
from rl.errors import RunDirLockedError, TrainingError, first_line
from rl.presets import PRESET_SOURCES, all_presets, find_preset, similar_presets
from rl.run_files import (
    CHECKPOINT_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PREVIOUS_CHECKPOINT_FILE,
    CheckpointError,
    UnsafeCheckpointError,
    load_plain_file,
)
from rl.state import MODEL_FORMAT
from rl.trpo import TRPO

__all__ = ["main"]

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def _version() -> str:
    try:
        return importlib.metadata.version("trust-region")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "unknown (not installed)"


def _positive_int(text: str) -> int:
    value = 0
    with contextlib.suppress(ValueError):
        value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="trpo", description="TRPO on Gymnasium environments.")
    parser.add_argument("--version", action="version", version=f"trpo {_version()}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{train,tune,eval,export,presets,plot}"
    )

    train = commands.add_parser(
        "train", help="train an agent; writes a run directory", epilog=_config_fields_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    train.add_argument("target", metavar="ENV_ID_OR_CONFIG_FILE", nargs="?",
                       help="a gymnasium env id (its preset applies) or a .yaml/.toml/.json "
                       "config")  # fmt: skip
    train.add_argument("--resume", metavar="RUN_DIR",
                       help="continue a run from its config.yaml and latest checkpoint (with "
                       "--total-steps, --restart and --quiet only)")  # fmt: skip
    train.add_argument("--restart", action="store_true",
                       help="with --resume: start afresh even when RUN_DIR holds a finished run "
                       "without a checkpoint (its rows, evaluations and model.pt are "
                       "replaced)")  # fmt: skip
    train.add_argument("--total-steps", type=int, help="env steps to train for")
    train.add_argument("--seed", type=int, help="random seed")
    train.add_argument("--num-envs", type=int, help="environments stepped together")
    train.add_argument("--run-dir", help="output directory (default: runs/ENV-seedS-TIME)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="any config field, dotted for nested ones (repeatable)")  # fmt: skip
    train.add_argument("--quiet", action="store_true", help="print only the final summary")
    train.add_argument("--preset", choices=PRESET_SOURCES, default="default",
                       help="ours (tuned where a study did better) or RL Zoo's")  # fmt: skip
    train.add_argument("--tensorboard", action="store_true",
                       help="also log metrics to RUN_DIR/tensorboard (needs: pip install "
                       "tensorboard)")  # fmt: skip
    train.set_defaults(handler=train_command)
    add_tune_parser(commands)

    evaluate = commands.add_parser("eval", help="evaluate the final model of a run")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a run directory from trpo train")
    evaluate.add_argument("--episodes", type=_positive_int,
                          help="episodes (default 10, or 1 with --video)")  # fmt: skip
    evaluate.add_argument("--json", action="store_true",
                          help="print only the result as one line of JSON")  # fmt: skip
    evaluate.add_argument("--video", metavar="DIR",
                          help="record the episodes as MP4s in DIR with gymnasium's RecordVideo "
                          "(needs moviepy)")  # fmt: skip
    evaluate.add_argument("--device", help="torch device to evaluate on (default: the run's, "
                          "else the CPU)")  # fmt: skip
    evaluate.set_defaults(handler=_eval)

    export = commands.add_parser(
        "export", help="write the deterministic policy as an ONNX or torch.export file"
    )
    export.add_argument("run_dir", metavar="RUN_DIR", help="a run directory from trpo train")
    export.add_argument("--format", choices=("onnx", "pt2"), default="onnx",
                        help="file format (default: onnx)")  # fmt: skip
    export.add_argument("--out", metavar="FILE", help="default: RUN_DIR/policy.onnx or .pt2")
    export.add_argument("--device", help="torch device to load the run on (default: as eval)")
    export.set_defaults(handler=_export)

    presets = commands.add_parser("presets", help="list the built-in tuned settings")
    presets.add_argument("env_id", metavar="ENV_ID", nargs="?",
                         help="show this env's full preset config")  # fmt: skip
    presets.add_argument("--preset", choices=PRESET_SOURCES, default="default",
                         help="ours (tuned where a study found better) or RL Zoo's")  # fmt: skip
    presets.set_defaults(handler=_presets)

    plot = commands.add_parser("plot", help="draw return vs env steps and vs wall time of runs "
                               "into a PNG")  # fmt: skip
    plot.add_argument("run_dirs", metavar="RUN_DIR", nargs="+",
                      help="run directories (or folders of them); runs differing only in seed "
                      "are averaged")  # fmt: skip
    plot.add_argument("--out", metavar="FILE.png",
                      help="image to write (default: RUN_DIR/returns.png for one run, else "
                      "returns.png)")  # fmt: skip
    plot.add_argument("--eval", action="store_true", help="plot evaluation returns (evals.jsonl) "
                      "instead of training returns")  # fmt: skip
    plot.set_defaults(handler=_plot)
    return parser


def _config_fields_help() -> str:
    """Every config field, its default, description and bounds, for ``trpo train --help``."""
    lines = ["config fields (--set KEY=VALUE):"]
    for key, field in TRPOConfig.model_fields.items():
        nested, fields = field.annotation, {key: field}
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            fields = {f"{key}.{name}": sub for name, sub in nested.model_fields.items()}
        for name, item in fields.items():
            default = item.get_default(call_default_factory=True)
            allowed = _allowed_values(item)
            lines.append(f"  {name:28s} {item.description} (default: {default!r}{allowed})")
    return "\n".join(lines)


def _allowed_values(field: FieldInfo) -> str:
    """'; one of a, b' for Literal fields, '; > 0, <= 1' style bounds for numbers, else ''."""
    if typing.get_origin(field.annotation) is typing.Literal:
        return "; one of " + ", ".join(map(str, typing.get_args(field.annotation)))
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    bounds = [
        f"{symbol} {getattr(item, attribute)}"
        for item in field.metadata
        for attribute, symbol in symbols.items()
        if getattr(item, attribute, None) is not None
    ]
    return "; " + ", ".join(bounds) if bounds else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trpo`` console script; returns the exit code."""
    parser = build_parser()
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments:  # `trpo` alone: what it can do, not only "arguments are required"
        parser.print_help(sys.stderr)
        return USAGE_ERROR
    return run_command(parser.parse_args(arguments))


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command's ``args.handler``; errors become one stderr line and an exit
    code (2 for bad arguments or config, 1 for training errors, 130 for Ctrl-C, 141 when
    the reader of stdout has gone, as for a program killed by SIGPIPE: ``trpo presets |
    head``)."""
    try:
        return args.handler(args)
    except (UsageError, ConfigError, RunDirLockedError, TrainingError) as error:
        print(f"trpo {args.command}: error: {error}", file=sys.stderr)
        # another process's run (RunDirLockedError): a usage error, nothing lost
        usage = not isinstance(error, TrainingError) or isinstance(error, RunDirLockedError)
        return USAGE_ERROR if usage else 1
    except KeyboardInterrupt:
        print(f"trpo {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # what is left to print goes nowhere, exit's flush included
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _load_run(run_dir: str, command: str, device: str | None = None) -> TRPO:
    """The newest intact state of ``run_dir`` (model.pt, or a newer or only checkpoint;
    checkpoint.prev.pt if checkpoint.pt is unreadable), said on stderr if not model.pt."""
    directory = Path(run_dir)
    if not directory.is_dir():
        raise UsageError(f"RUN_DIR = {run_dir!r}: no such directory")
    names = (MODEL_FILE, CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE)
    present = [directory / name for name in names if (directory / name).is_file()]
    if not present:
        raise UsageError(f"RUN_DIR = {run_dir!r}: no {MODEL_FILE} in it (has training ended?)")
    steps, errors = {}, {}
    for path in present:  # the step of each model file or checkpoint
        try:
            state = load_plain_file(path)
        except UnsafeCheckpointError as error:  # tampered with: refused, no fallback
            raise UsageError(str(error)) from None
        except CheckpointError as error:
            errors[path] = first_line(error)
            continue
        model = state.get("model", state) if isinstance(state, dict) else None
        if isinstance(model, dict) and model.get("format") == MODEL_FORMAT:
            steps[path] = int(model["step"])
        else:
            errors[path] = f"{str(path)!r} is not an rl TRPO model file ({MODEL_FORMAT})"
    if not steps:
        raise UsageError(next(iter(errors.values())))
    newest = max(steps, key=lambda path: (steps[path], path.name == MODEL_FILE))
    if newest.name != MODEL_FILE:
        model = directory / MODEL_FILE
        why = (
            f"newer than {MODEL_FILE} at step {steps[model]}" if model in steps
            else errors.get(model, f"no {MODEL_FILE}: training did not finish")
        )  # fmt: skip
        print(f"trpo {command}: using {newest.name} at step {steps[newest]} ({why})",
              file=sys.stderr)  # fmt: skip
    try:
        return TRPO.load(newest, device=device)
    except ValueError as error:  # CheckpointError included: it names the file and the fault
        if device is not None or not str(error).startswith("device = "):
            raise UsageError(first_line(error)) from None
        print(f"trpo {command}: {str(error).split(';')[0]}: using the CPU", file=sys.stderr)
        return TRPO.load(newest, device="cpu")  # trained on a GPU, looked at on a laptop
    except (OSError, RuntimeError, pickle.UnpicklingError) as error:
        raise UsageError(f"cannot load {str(newest)!r}: {first_line(error)}") from None


def _export(args: argparse.Namespace) -> int:
    from rl.export import export_policy  # torch.export / onnx only when asked for

    out = Path(args.out) if args.out else Path(args.run_dir) / f"policy.{args.format}"
    with contextlib.closing(_load_run(args.run_dir, "export", args.device)) as agent:
        try:
            written = export_policy(agent, out, args.format)
        except ImportError as error:
            raise UsageError(f"--format {args.format}: {error}") from None
    print(f"wrote {written}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    if args.video:
        from rl.video import use_offscreen_rendering

        use_offscreen_rendering()  # before the first MuJoCo env is made
    episodes = args.episodes or (1 if args.video else 10)
    with contextlib.closing(_load_run(args.run_dir, "eval", args.device)) as agent:
        if args.video:
            stats = _record_video(agent, args.video, episodes)
        else:
            stats = agent.evaluate(episodes=episodes)
    if args.json:
        print(json.dumps(stats))
    else:
        print(
            f"mean return {stats['mean_return']:.2f} ± {stats['std_return']:.2f} over "
            f"{episodes} episodes (mean length {stats['mean_length']:.1f})"
        )
        for video in stats.get("videos", []):
            print(f"video: {video}")
    return 0


def _record_video(agent: TRPO, video_dir: str, episodes: int) -> dict[str, typing.Any]:
    from rl.video import record_video  # imports moviepy lazily, through RecordVideo

    try:
        return record_video(agent, video_dir, episodes=episodes)
    except ImportError as error:
        raise UsageError(f"--video: {error}") from None
    except (gym.error.Error, ValueError, RuntimeError, OSError) as error:
        message = first_line(error) if str(error).strip() else repr(error)
        raise UsageError(f"--video {video_dir!r}: cannot record: {message}") from None


def _presets(args: argparse.Namespace) -> int:
    if args.env_id is not None:  # one preset, as loadable YAML
        preset = find_preset(args.env_id, args.preset)
        if preset is None:
            similar = similar_presets(args.env_id)
            hint = f"; did you mean {' or '.join(map(repr, similar))}?" if similar else ""
            names = ", ".join(p.env_id for p in all_presets())
            raise UsageError(f"ENV_ID = {args.env_id!r}: no preset{hint} (presets: {names})")
        config = TRPOConfig.from_preset(args.env_id, source=args.preset)
        print(f"# preset {preset.env_id} from rl/presets/{preset.file}")
        print(f"# source: {preset.source}")
        if preset.note:
            print(f"# note: {preset.note}")
        print(config.to_yaml(), end="")
        return 0
    ids = dict.fromkeys(preset.env_id for preset in all_presets())  # in file order
    presets = [p for i in ids if (p := find_preset(i, args.preset)) and p.env_id == i]
    header = f"{'env id':26s} {'steps':>10s} {'envs x steps/env':>17s} {'max_kl':>7s} "
    header += f"{'gamma':>6s} {'lam':>5s} {'normalize':>9s}  file"
    print(header)
    for preset in presets:
        config = TRPOConfig.from_preset(preset.env_id, source=args.preset)
        normalize = "obs+rew" if config.normalize_observations else "-"
        if config.normalize_rewards and not config.normalize_observations:
            normalize = "rew"
        mark = "*" if preset.note else " "
        print(
            f"{preset.env_id + mark:26s} {config.total_steps:>10,d} "
            f"{f'{config.num_envs} x {config.steps_per_env}':>17s} {config.max_kl:>7.4g} "
            f"{config.gamma:>6.4g} {config.lam:>5.3g} {normalize:>9s}  {preset.file}"
        )
    print("\n* has a note: deviations from its source (trpo presets ENV_ID shows it)")
    if tuned := [p.env_id for p in presets if not p.is_zoo and find_preset(p.env_id, "zoo")]:
        print(f"tuned here: {', '.join(tuned)} (RL Zoo's settings: trpo presets --preset zoo)")
    print("sources:")
    for file, source in {preset.file: preset.source for preset in presets}.items():
        print(f"  {file}: {source}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from rl.plot import plot_runs  # matplotlib (~0.4 s) only for the command that draws

    if args.out is not None:
        out = Path(args.out)
    elif len(args.run_dirs) == 1 and (Path(args.run_dirs[0]) / METRICS_FILE).is_file():
        out = Path(args.run_dirs[0]) / "returns.png"
    else:
        out = Path("returns.png")
    try:
        written = plot_runs(args.run_dirs, out, source="eval" if args.eval else "train")
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from None
    print(f"wrote {written}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
