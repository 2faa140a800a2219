"""The ``trpo`` command: ``trpo train`` and ``trpo eval``.

    trpo train ENV_ID_OR_CONFIG_FILE [--total-steps N] [--seed S] [--num-envs K]
               [--run-dir DIR] [--set key=value ...] [--quiet]
    trpo eval RUN_DIR [--episodes N] [--json]

Invalid arguments or config values exit with code 2 and one line on stderr naming the
field and the value.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import gymnasium as gym
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from rl.config import (
    ENV_PRESETS,
    ConfigError,
    TRPOConfig,
    merge_dicts,
    parse_overrides,
    read_config_file,
)
from rl.run_files import METRICS_FILE, MODEL_FILE
from rl.trpo import TRPO

__all__ = ["main"]

CONFIG_SUFFIXES = (".yaml", ".yml", ".toml", ".json")
USAGE_ERROR = 2


class UsageError(Exception):
    """A bad argument or config value: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="trpo", description="TRPO on Gymnasium environments.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,eval}")

    train = commands.add_parser(
        "train",
        help="train an agent; writes a run directory",
        epilog=_config_fields_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "target",
        metavar="ENV_ID_OR_CONFIG_FILE",
        help="a gymnasium env id (its preset applies) or a .yaml/.toml/.json config",
    )
    train.add_argument("--total-steps", type=int, help="env steps to train for")
    train.add_argument("--seed", type=int, help="random seed")
    train.add_argument("--num-envs", type=int, help="environments stepped together")
    train.add_argument("--run-dir", help="output directory (default: runs/ENV-seedS-TIME)")
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any config field, dotted for nested ones (repeatable)",
    )
    train.add_argument("--quiet", action="store_true", help="print only the final summary")
    train.set_defaults(handler=_train)

    evaluate = commands.add_parser("eval", help="evaluate the final model of a run")
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a run directory from trpo train")
    evaluate.add_argument(
        "--episodes", type=_positive_int, default=10, help="episodes (default 10)"
    )
    evaluate.add_argument(
        "--json", action="store_true", help="print only the result as one line of JSON"
    )
    evaluate.set_defaults(handler=_eval)
    return parser


def _config_fields_help() -> str:
    """Every config field, its default and its description, for ``trpo train --help``."""
    lines = ["config fields (--set KEY=VALUE):"]
    for key, field in TRPOConfig.model_fields.items():
        nested = field.annotation
        if isinstance(nested, type) and issubclass(nested, BaseModel):
            for sub_key, sub_field in nested.model_fields.items():
                lines.append(_field_line(f"{key}.{sub_key}", sub_field))
        else:
            lines.append(_field_line(key, field))
    return "\n".join(lines)


def _field_line(name: str, field: FieldInfo) -> str:
    default = field.get_default(call_default_factory=True)
    allowed = _allowed_values(field)
    allowed = f"; {allowed}" if allowed else ""
    return f"  {name:28s} {field.description} (default: {default!r}{allowed})"


def _allowed_values(field: FieldInfo) -> str:
    """'one of a, b' for Literal fields, '> 0, <= 1' style bounds for numbers, else ''."""
    if typing.get_origin(field.annotation) is typing.Literal:
        return "one of " + ", ".join(map(str, typing.get_args(field.annotation)))
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    bounds = [
        f"{symbol} {getattr(item, attribute)}"
        for item in field.metadata
        for attribute, symbol in symbols.items()
        if getattr(item, attribute, None) is not None
    ]
    return ", ".join(bounds)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trpo`` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (UsageError, ConfigError) as error:
        print(f"trpo {args.command}: error: {error}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print(f"trpo {args.command}: interrupted", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------------- train
def _train(args: argparse.Namespace) -> int:
    config, preset_used = _resolve_train_config(args)
    agent = _make_agent(config)
    if not args.quiet:
        preset = " (preset from RL Zoo's TRPO settings)" if preset_used else ""
        print(
            f"trpo: training {config.env_id}{preset} for {config.total_steps} steps, "
            f"seed {config.seed}, run dir {config.run_dir}",
            flush=True,
        )
    try:
        agent.learn(progress="quiet" if args.quiet else "auto", final_evaluation=True)
    finally:
        agent.close()
    return 0


def _resolve_train_config(args: argparse.Namespace) -> tuple[TRPOConfig, bool]:
    """Preset of the env ← config file ← --set ← flags; returns (config, preset applied)."""
    target = Path(args.target)
    from_file = target.suffix.lower() in CONFIG_SUFFIXES or target.is_file()
    file_data = read_config_file(target) if from_file else {"env_id": args.target}
    flags = {
        "total_steps": args.total_steps,
        "seed": args.seed,
        "num_envs": args.num_envs,
        "run_dir": args.run_dir,
    }
    overrides = merge_dicts(
        parse_overrides(args.set), {k: v for k, v in flags.items() if v is not None}
    )
    data = merge_dicts(file_data, overrides)
    env_id = data.get("env_id")
    if not isinstance(env_id, str) or not env_id:
        raise UsageError(f"env_id = {env_id!r}: a gymnasium env id is required")
    _check_env_id(env_id)
    preset = ENV_PRESETS.get(env_id, {})
    config = TRPOConfig.from_dict(merge_dicts(preset, data))
    if config.run_dir is None:
        config = config.with_overrides({"run_dir": _default_run_dir(env_id, config.seed)})
    if (Path(config.run_dir) / METRICS_FILE).exists():
        raise UsageError(f"run_dir = {config.run_dir!r} already holds a run; choose another")
    return config, bool(preset)


def _check_env_id(env_id: str) -> None:
    try:
        gym.spec(env_id)
    except gym.error.Error as error:
        message = str(error).strip().splitlines()[0]
        raise UsageError(f"env_id = {env_id!r}: {message}") from None


def _default_run_dir(env_id: str, seed: int) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / f"{env_id.replace('/', '_')}-seed{seed}-{stamp}"
    candidate, suffix = base, 1
    while candidate.exists():
        suffix += 1
        candidate = base.with_name(f"{base.name}-{suffix}")
    return str(candidate)


def _make_agent(config: TRPOConfig) -> TRPO:
    try:
        return TRPO(config)
    except (gym.error.Error, TypeError, ValueError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise UsageError(
            f"cannot build the agent for env_id = {config.env_id!r} "
            f"(env_kwargs = {config.env_kwargs!r}): {message}"
        ) from None


# --------------------------------------------------------------------------------- eval
def _eval(args: argparse.Namespace) -> int:
    model_path = Path(args.run_dir) / MODEL_FILE
    if not model_path.is_file():
        raise UsageError(f"RUN_DIR = {args.run_dir!r}: no {MODEL_FILE} in it (has training ended?)")
    try:
        agent = TRPO.load(model_path)
    except (OSError, RuntimeError, ValueError) as error:
        raise UsageError(f"cannot load {str(model_path)!r}: {str(error).splitlines()[0]}") from None
    try:
        stats = agent.evaluate(episodes=args.episodes)
    finally:
        agent.close()
    if args.json:
        print(json.dumps(stats))
    else:
        print(
            f"mean return {stats['mean_return']:.2f} ± {stats['std_return']:.2f} over "
            f"{args.episodes} episodes (mean length {stats['mean_length']:.1f})"
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
