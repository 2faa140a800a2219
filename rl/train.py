"""``torchrun --nproc-per-node K -m rl.train ARGS``: one TRPO run on K processes; ARGS are
those of ``trpo train``. Each rank runs the config's envs, rank 0 prints and writes the run
directory (docs/distributed.md: the commands, several machines included)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch.distributed as dist

from rl.cli import USAGE_ERROR, build_parser, run_command
from rl.cli_train import train_command
from rl.config import merge_dicts, parse_overrides, read_config_file
from rl.distributed import DistributedComm, init_process_group_from_env, launched_by_torchrun
from rl.run_files import CONFIG_FILE

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``trpo train ARGS`` as one rank of a torchrun job; returns the exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(["train", *arguments])  # --help, bad flags: exit here
    if not launched_by_torchrun():
        print(
            "rl.train: error: start it with torchrun, e.g. torchrun --standalone "
            "--nproc-per-node 2 -m rl.train ARGS (for one process: trpo train ARGS)",
            file=sys.stderr,
        )
        return USAGE_ERROR
    initialised_here = init_process_group_from_env()
    code = 1
    try:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        args.handler = functools.partial(train_command, make_comm=DistributedComm)
        if rank != 0:  # rank 0 speaks for the job
            args.quiet, args.tensorboard = True, False
        restart_error = _follow_restarts(args, rank)
        if restart_error is not None:
            if rank == 0:
                print(f"rl.train: error: {restart_error}", file=sys.stderr)
            code = USAGE_ERROR
            return code
        with contextlib.ExitStack() as stack:
            if rank != 0:  # stdout to /dev/null; stderr, with any error, stays
                devnull = stack.enter_context(open(os.devnull, "w"))
                stack.enter_context(contextlib.redirect_stdout(devnull))
            if not args.quiet:
                print(f"rl.train: {world_size} ranks ({dist.get_backend()}), each with its own "
                      f"envs: an iteration learns from {world_size} x steps_per_iteration "
                      "steps; total_steps counts all ranks", flush=True)  # fmt: skip
            code = run_command(args)
            return code
    finally:
        if initialised_here:
            if code == 0:  # every rank got here: tear the group down together
                dist.barrier()
            dist.destroy_process_group()


def _follow_restarts(args: argparse.Namespace, rank: int) -> str | None:
    """torchrun's restart contract: a restarted job (``TORCHELASTIC_RESTART_COUNT`` > 0)
    whose ``--run-dir`` holds config.yaml becomes ``--resume RUN_DIR`` (``--total-steps``
    kept), said on stderr; the error (exit 2) of a job allowed restarts without a run dir."""
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0)
    allowed = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS") or 0)
    if args.resume is not None or max(restarts, allowed) == 0:
        return None
    run_dir = args.run_dir or _run_dir_of(args)
    if run_dir is None:
        return (
            f"--max-restarts {allowed} needs --run-dir RUN_DIR: a restarted job resumes the "
            "run there (without one, each restart would start a new run)"
        )
    box = [(Path(run_dir) / CONFIG_FILE).is_file() if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    if restarts > 0 and box[0]:
        if rank == 0:  # on stderr: said even with --quiet
            print(f"rl.train: restart {restarts} of at most {allowed}: resuming {run_dir} "
                  "from its last checkpoint", file=sys.stderr, flush=True)  # fmt: skip
        args.resume, args.run_dir = run_dir, None
        args.target, args.seed, args.num_envs, args.set = None, None, None, []
    return None


def _run_dir_of(args: argparse.Namespace) -> str | None:
    """``run_dir`` as a config file or ``--set`` gives it (None if neither does)."""
    target = Path(args.target) if args.target else None
    data = read_config_file(target) if target is not None and target.is_file() else {}
    run_dir = merge_dicts(data, parse_overrides(args.set)).get("run_dir")
    return str(run_dir) if run_dir else None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
