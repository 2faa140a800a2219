"""Crash safety of ``trpo train``: SIGKILL it at random moments, resume, lose nothing.

Runs ``trpo train`` (``rl.cli.main``, what the console script runs) on a small task with a
checkpoint after every iteration, kills it with SIGKILL ``--kills`` times (default 20) and
resumes it each time with ``trpo train --resume RUN_DIR``, then lets it finish. Half of
the kills land at a random time (up to 3 s after the imports, so during the resume's
replay, rollouts, updates, evaluations or writes); the others wait until the process is
in a chosen phase (rollout, update, evaluation, metrics row, or one of the steps of a
checkpoint write) and kill it there after a random delay. After every kill it checks:

* every checkpoint file in the run directory reads (``rl.checkpoint.read_checkpoint``) and
  config.yaml parses;
* the checkpoint that resume will use is the last one whose write had completed (or the
  one whose rename had just landed): no completed checkpoint is lost;
* metrics.jsonl holds at most ``checkpoint_every`` rows past that checkpoint (they and the
  iteration in progress are what gets redone);

and at the end that every resume started from the checkpoint found after the kill, the
final metrics.jsonl has each iteration once and equals (timing fields aside) the rows of
an uninterrupted run with the same arguments, evals.jsonl likewise, no temporary file is
left, and no output has a traceback or a CheckpointWarning. Then two concurrency cases: two
``trpo train`` on one run directory at once, and a second ``--resume`` while one runs: one
wins, the other exits 2 naming what holds the directory (the run lock), rows once each.

How the kills are aimed: the killed processes run ``rl.cli.main`` in a child of this script
(``--child``) that wraps a few functions to append a line per phase to a markers file
(``os.write`` with O_APPEND, so it survives SIGKILL) and, to widen the windows, sleeps
``--write-delay`` seconds inside each checkpoint write: after writing half of the
temporary file, before each fsync, before the hard link that keeps the previous
checkpoint, and before each rename. Nothing else changes: the instrumented run writes the
same rows as the uninterrupted one, which runs the plain ``python -m rl.cli``.

    python benchmarks/crash_safety.py [--kills 20] [--seed 0] [--env Pendulum-v1]
        [--vector-mode sync] [--work-dir DIR] [--json FILE]

Prints a table of the kills by phase with what was lost, and exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TIMING_KEYS = {"fps", "time", "rollout_time", "update_time"}
WRITE_STEPS = ("checkpoint:write", "checkpoint:fsync", "checkpoint:link", "checkpoint:replace")
AIMED_TARGETS = ("rollout", "update", *WRITE_STEPS, "metrics", "evaluate")
# how long after a phase starts an aimed kill may come, in seconds (write steps: the delay)
AIM_WINDOW = {"rollout": 0.02, "update": 0.01, "metrics": 0.0, "evaluate": 0.01}


# ----------------------------------------------------------------------------- child
def instrument(markers: str, write_delay: float) -> Callable[..., None]:
    """In the child: log phases to ``markers`` and slow checkpoint writes down; returns
    the function that appends a marker."""
    import torch

    import rl.checkpoint
    import rl.loop
    import rl.trpo
    from rl.run_files import RunFiles

    descriptor = os.open(markers, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def mark(phase: str, detail: object = "") -> None:
        os.write(descriptor, f"{time.monotonic():.6f} {phase} {detail}\n".encode())

    writing: dict[str, str | None] = {"what": None}  # "checkpoint" or "model" while writing

    def before(owner: type, name: str, phase: str, detail) -> None:  # type: ignore[no-untyped-def]
        original = getattr(owner, name)

        @functools.wraps(original)
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            mark(phase, detail(*args))
            return original(*args, **kwargs)

        setattr(owner, name, wrapper)

    trpo = rl.trpo.TRPO
    before(rl.loop, "collect", "rollout", lambda agent, *_: agent.iteration + 1)
    before(rl.loop, "update", "update", lambda agent, *_: agent.iteration + 1)
    before(rl.loop, "evaluate_during_training", "evaluate", lambda agent, *_: agent.iteration)
    before(RunFiles, "append_metrics", "metrics", lambda files, row: row["iteration"])

    def writing_as(what: str, function):  # type: ignore[no-untyped-def]
        @functools.wraps(function)
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            writing["what"] = what
            try:
                return function(*args, **kwargs)
            finally:
                writing["what"] = None

        return wrapper

    write_checkpoint = writing_as("checkpoint", rl.checkpoint.write_checkpoint)

    def logged_write_checkpoint(state, directory):  # type: ignore[no-untyped-def]
        iteration = state["progress"]["iteration"]
        mark("checkpoint", iteration)
        path = write_checkpoint(state, directory)
        mark("checkpoint-done", iteration)
        return path

    rl.checkpoint.write_checkpoint = logged_write_checkpoint
    trpo.save = writing_as("model", trpo.save)

    original_resume = trpo.resume.__func__

    def resume(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
        agent = original_resume(cls, *args, **kwargs)
        mark("resumed", agent.iteration)
        return agent

    trpo.resume = classmethod(resume)
    restore = rl.loop.restore_training_state

    def logged_restore(*args, **kwargs):  # type: ignore[no-untyped-def]
        mark("replay")
        return restore(*args, **kwargs)

    rl.loop.restore_training_state = logged_restore

    real_torch_save = torch.save

    def slow_torch_save(obj, file, *args, **kwargs):  # type: ignore[no-untyped-def]
        what = writing["what"]
        if what is None or not hasattr(file, "write"):
            return real_torch_save(obj, file, *args, **kwargs)
        buffer = io.BytesIO()
        real_torch_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        file.write(data[: len(data) // 2])
        file.flush()
        mark(f"{what}:write")
        time.sleep(write_delay)
        file.write(data[len(data) // 2 :])

    torch.save = slow_torch_save

    for name in ("fsync", "link", "replace"):
        real = getattr(os, name)

        def slow(*args, _real=real, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            what = writing["what"]
            mark(f"{what or 'files'}:{_name}")
            time.sleep(write_delay if what else write_delay / 4)
            return _real(*args, **kwargs)

        setattr(os, name, slow)
    return mark


def run_child(markers: str, write_delay: float, argv: list[str]) -> int:
    mark = instrument(markers, write_delay)
    from rl.cli import main

    mark("start")  # the imports are done
    return main(argv)


# ----------------------------------------------------------------------------- parent
@dataclass
class Kill:
    """One SIGKILL and what the run directory looked like after it."""

    number: int
    target: str
    phase: str  # the last phase the process reached
    seconds_after_start: float
    checkpoint_iteration: int | None  # the checkpoint resume will use
    completed_before: int | None  # the last checkpoint whose write had completed
    rows_past_checkpoint: int
    iteration_in_progress: int | None
    unreadable: list[str] = field(default_factory=list)
    latest_missing: bool = False  # checkpoint.pt absent while checkpoint.prev.pt exists
    config_ok: bool = True
    temporaries: int = 0
    resumed_at: int | None = None  # filled in from the next process's markers
    problems: list[str] = field(default_factory=list)

    @property
    def redone(self) -> int:
        """Iterations that will run again: those past the checkpoint resume uses, up to the
        one the kill interrupted."""
        started = self.iteration_in_progress or 0
        return max(started - (self.checkpoint_iteration or 0), 0)


def read_markers(path: Path) -> list[tuple[float, str, str]]:
    if not path.exists():
        return []
    markers = []
    for line in path.read_text().splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3:
            markers.append((float(parts[0]), parts[1], parts[2]))
    return markers


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The readable rows of a .jsonl file (a line torn by a kill is skipped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            rows.append(json.loads(line))
    return rows


def without_timing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def spawn(argv: list[str], markers: Path, write_delay: float, log: Path) -> subprocess.Popen:
    command = [sys.executable, __file__, "--child", str(markers), str(write_delay), "--", *argv]
    with open(log, "a") as output:
        output.write(f"$ trpo {' '.join(argv)}\n")
        output.flush()
        return subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )


def aim_and_kill(
    process: subprocess.Popen,
    markers: Path,
    target: str,
    rng: random.Random,
    write_delay: float,
    random_window: float,
) -> bool:
    """SIGKILL ``process`` at ``target`` (a phase, or "random"); False if it exited first."""
    if target == "random":  # from the end of the imports (before it, nothing is written)
        while not read_markers(markers):
            if process.poll() is not None:
                return False
            time.sleep(0.002)
        deadline = time.monotonic() + rng.uniform(0.0, random_window)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            time.sleep(0.002)
    else:
        seen = 0
        while True:
            if process.poll() is not None:
                return False
            found = read_markers(markers)
            if len(found) > seen and found[-1][1] == target:
                break
            seen = len(found)
            time.sleep(0.0005)
        time.sleep(rng.uniform(0, AIM_WINDOW.get(target, write_delay * 0.9)))
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # AsyncVectorEnv workers, if any
    return True


def inspect_run_dir(run_dir: Path) -> dict[str, Any]:
    """Read every checkpoint and the config; what resume will find."""
    from rl.checkpoint import read_checkpoint
    from rl.config import ConfigError, TRPOConfig
    from rl.run_files import CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE, CheckpointError

    iterations: dict[str, int] = {}
    unreadable = []
    for name in (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE):
        path = run_dir / name
        if path.exists():
            try:
                iterations[name] = int(read_checkpoint(path)["progress"]["iteration"])
            except CheckpointError as error:
                unreadable.append(f"{name}: {error}")
    config_ok = True
    if (run_dir / "config.yaml").exists():
        try:
            TRPOConfig.from_file(run_dir / "config.yaml")
        except ConfigError:
            config_ok = False
    rows = read_rows(run_dir / "metrics.jsonl")
    return {
        "checkpoint_iteration": iterations.get(
            CHECKPOINT_FILE, iterations.get(PREVIOUS_CHECKPOINT_FILE)
        ),
        "unreadable": unreadable,
        "latest_missing": CHECKPOINT_FILE not in iterations
        and PREVIOUS_CHECKPOINT_FILE in iterations,
        "config_ok": config_ok,
        "has_config": (run_dir / "config.yaml").exists(),
        "max_row": max((row.get("iteration", 0) for row in rows), default=0),
        "temporaries": len(list(run_dir.glob(".*.tmp"))),
    }


def last_marker(markers: list[tuple[float, str, str]], phase: str) -> int | None:
    details = [detail for _, name, detail in markers if name == phase]
    return int(details[-1]) if details else None


def crash_and_resume(
    run_dir: Path,
    train_argv: list[str],
    kills: int,
    rng: random.Random,
    write_delay: float = 0.1,
    random_window: float = 3.0,
    checkpoint_every: int = 1,
    targets: list[str] | None = None,
    log: Path | None = None,
    finish: bool = True,
) -> tuple[list[Kill], int]:
    """Kill ``trpo train`` ``kills`` times, resuming after each; then (with ``finish``) run
    it to the end.

    Returns:
        (the kills, the exit code of the last, uninterrupted process; 0 without ``finish``)
    """
    log = log or run_dir.with_name(run_dir.name + ".log")
    work = run_dir.with_name(run_dir.name + ".markers")
    work.mkdir(parents=True, exist_ok=True)
    if targets is None:
        targets = [
            "random" if k % 2 == 0 else AIMED_TARGETS[(k // 2) % len(AIMED_TARGETS)]
            for k in range(kills)
        ]
        rng.shuffle(targets)
    resume_argv = ["train", "--resume", str(run_dir), "--quiet"]
    completed: int | None = None
    history: list[Kill] = []
    for number, target in enumerate(targets[:kills], start=1):
        argv = resume_argv if (run_dir / "config.yaml").exists() else train_argv
        markers = work / f"{number:03d}.txt"
        started = time.monotonic()
        process = spawn(argv, markers, write_delay, log)
        if not aim_and_kill(process, markers, target, rng, write_delay, random_window):
            raise RuntimeError(
                f"kill {number}: trpo train exited with {process.returncode} before the "
                f"kill ({target}); see {log}"
            )
        found = read_markers(markers)
        if history:
            history[-1].resumed_at = last_marker(found, "resumed")
        done_here = last_marker(found, "checkpoint-done")
        completed = done_here if done_here is not None else completed
        state = inspect_run_dir(run_dir)
        phase = found[-1][1] if found else "startup (before imports finished)"
        kill = Kill(
            number=number,
            target=target,
            phase=phase,
            seconds_after_start=round(time.monotonic() - started, 3),
            checkpoint_iteration=state["checkpoint_iteration"],
            completed_before=completed,
            rows_past_checkpoint=state["max_row"] - (state["checkpoint_iteration"] or 0),
            iteration_in_progress=last_marker(found, "rollout"),
            unreadable=state["unreadable"],
            latest_missing=state["latest_missing"],
            config_ok=state["config_ok"],
            temporaries=state["temporaries"],
        )
        kill.problems = check_kill(kill, checkpoint_every)
        history.append(kill)
    returncode = 0
    if finish:
        markers = work / "final.txt"
        argv = resume_argv if (run_dir / "config.yaml").exists() else train_argv
        returncode = spawn(argv, markers, 0.0, log).wait()
        if history:
            history[-1].resumed_at = last_marker(read_markers(markers), "resumed")
    for kill in history:
        if kill.resumed_at not in (None, kill.checkpoint_iteration or 0):
            kill.problems.append(
                f"resumed at iteration {kill.resumed_at}, the checkpoint after the kill was "
                f"{kill.checkpoint_iteration}"
            )
    return history, returncode


def check_kill(kill: Kill, checkpoint_every: int) -> list[str]:
    problems = []
    if kill.unreadable:
        problems.append(f"unreadable checkpoint: {kill.unreadable}")
    if kill.latest_missing:
        problems.append("checkpoint.pt missing (only checkpoint.prev.pt)")
    if not kill.config_ok:
        problems.append("config.yaml does not parse")
    if (
        kill.completed_before is not None
        and (kill.checkpoint_iteration or 0) < kill.completed_before
    ):
        problems.append(
            f"checkpoint of iteration {kill.completed_before} lost (found "
            f"{kill.checkpoint_iteration})"
        )
    if kill.rows_past_checkpoint > checkpoint_every:
        problems.append(f"{kill.rows_past_checkpoint} rows past the checkpoint")
    return problems


def check_final(run_dir: Path, baseline_dir: Path, log: Path, returncode: int) -> list[str]:
    problems = []
    if returncode != 0:
        problems.append(f"the last resume exited with {returncode}")
    rows = read_rows(run_dir / "metrics.jsonl")
    expected = read_rows(baseline_dir / "metrics.jsonl")
    iterations = [row["iteration"] for row in rows]
    if iterations != list(range(1, len(expected) + 1)):
        problems.append(f"metrics.jsonl iterations {iterations}")
    if without_timing(rows) != without_timing(expected):
        problems.append("metrics.jsonl differs from the uninterrupted run's (timing aside)")
    if without_timing(read_rows(run_dir / "evals.jsonl")) != without_timing(
        read_rows(baseline_dir / "evals.jsonl")
    ):
        problems.append("evals.jsonl differs from the uninterrupted run's (timing aside)")
    temporaries = sorted(path.name for path in run_dir.glob(".*.tmp"))
    if temporaries:
        problems.append(f"temporary files left: {temporaries}")
    # An AsyncVectorEnv worker whose main process was SIGKILLed sees its pipe break and
    # prints "Process Worker<AsyncVectorEnv>-i:" and a traceback as it exits (up to the next
    # command in the log): not an error of the run. Any other traceback is.
    worker_exits = r"Process Worker<AsyncVectorEnv>-\d+:\n(?:(?!\$ trpo ).*\n?)*"
    output = re.sub(worker_exits, "", log.read_text())
    for needle in ("Traceback", "warning:", "CheckpointWarning"):
        if needle in output:
            problems.append(f"{needle!r} in the output ({log})")
    return problems


def train_argv(args: argparse.Namespace, run_dir: Path) -> list[str]:
    iterations, steps_per_iteration = args.iterations, args.steps_per_iteration
    return [
        "train", args.env, "--run-dir", str(run_dir), "--seed", str(args.seed),
        "--num-envs", "2", "--total-steps", str(iterations * steps_per_iteration), "--quiet",
        "--set", f"steps_per_iteration={steps_per_iteration}",
        "--set", "checkpoint_every=1",
        "--set", f"eval_every={5 * steps_per_iteration}", "--set", "eval_episodes=2",
        "--set", "policy.hidden_sizes=[32,32]", "--set", "value.hidden_sizes=[32,32]",
        "--set", f"vector_mode={args.vector_mode}",
    ]  # fmt: skip


def table(kills: list[Kill]) -> str:
    by_phase: dict[str, list[Kill]] = {}
    for kill in kills:
        by_phase.setdefault(kill.phase, []).append(kill)
    lines = [
        "| phase at the SIGKILL | kills | aimed | resumed from the right checkpoint | "
        "unreadable checkpoints | completed checkpoints lost | iterations redone (max) |",
        "|---|---|---|---|---|---|---|",
    ]
    for phase, group in sorted(by_phase.items()):
        aimed = sum(kill.target != "random" for kill in group)
        right = sum(
            kill.resumed_at is None or kill.resumed_at == (kill.checkpoint_iteration or 0)
            for kill in group
        )
        unreadable = sum(len(kill.unreadable) for kill in group)
        lost = sum(
            kill.completed_before is not None
            and (kill.checkpoint_iteration or 0) < kill.completed_before
            for kill in group
        )
        redone = max(kill.redone for kill in group)
        lines.append(
            f"| {phase} | {len(group)} | {aimed} | {right}/{len(group)} | {unreadable} | "
            f"{lost} | {redone} |"
        )
    return "\n".join(lines)


def concurrency_cases(args: argparse.Namespace, work: Path) -> list[str]:
    """Two processes on one run directory: two ``trpo train`` started together, then a
    second ``--resume`` while a first runs. One wins, the other exits 2 naming what holds
    the directory, and the winner's rows have each iteration once. Returns the problems."""
    run_dir, problems = work / "concurrent", []
    argv = train_argv(args, run_dir)
    iterations = 10
    argv[argv.index("--total-steps") + 1] = str(iterations * args.steps_per_iteration)
    command = [sys.executable, "-m", "rl.cli"]
    both = [subprocess.Popen([*command, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]  # fmt: skip
    outcomes = sorted((p.wait(), p.communicate()[1]) for p in both)
    codes = [code for code, _ in outcomes]
    loser = outcomes[-1][1]
    refused = "is in use by process" in loser or "already holds a run" in loser
    print(f"two trains at once: exit codes {codes}; the second: {loser.strip()[:120]!r}")
    if codes != [0, 2] or not refused:
        problems.append(f"two trains at once: exit codes {codes}, {loser.strip()[:200]!r}")
    longer = ["train", "--resume", str(run_dir), "--quiet",  # stopped below by SIGTERM
              "--total-steps", str(1000 * iterations * args.steps_per_iteration)]  # fmt: skip
    first = subprocess.Popen([*command, *longer], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not (run_dir / ".lock").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    second = subprocess.run([*command, *longer], capture_output=True, text=True)
    first.send_signal(signal.SIGTERM)
    first_code = first.wait()
    print(f"a second resume while one runs: exit {second.returncode}: "
          f"{second.stderr.strip()[:120]!r}; the first (SIGTERM): exit {first_code}")  # fmt: skip
    if second.returncode != 2 or f"in use by process {first.pid}" not in second.stderr:
        problems.append(f"second resume: exit {second.returncode}, {second.stderr[-200:]!r}")
    written = [row["iteration"] for row in read_rows(run_dir / "metrics.jsonl")]
    if first_code != 128 + signal.SIGTERM or written != list(range(1, len(written) + 1)):
        problems.append(f"concurrent run dir rows: {written}, exit {first_code}")
    return problems


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kills and of the run")
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--steps-per-iteration", type=int, default=300)
    parser.add_argument("--vector-mode", choices=("sync", "async"), default="sync")
    parser.add_argument("--write-delay", type=float, default=0.1)
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--json", type=Path, help="write the kills here")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="crash-safety-"))
    work.mkdir(parents=True, exist_ok=True)
    baseline_dir, run_dir = work / "uninterrupted", work / "killed"
    print(f"work dir {work}; uninterrupted run first", flush=True)
    baseline = subprocess.run(
        [sys.executable, "-m", "rl.cli", *train_argv(args, baseline_dir)],
        capture_output=True,
        text=True,
    )
    if baseline.returncode != 0:
        print(baseline.stdout, baseline.stderr, file=sys.stderr)
        return 1
    started = time.monotonic()
    rng = random.Random(args.seed)
    log = work / "killed.log"
    kills, returncode = crash_and_resume(
        run_dir, train_argv(args, run_dir), args.kills, rng, args.write_delay, log=log
    )
    problems = [f"kill {kill.number}: {problem}" for kill in kills for problem in kill.problems]
    problems += check_final(run_dir, baseline_dir, log, returncode)
    problems += concurrency_cases(args, work)
    rows = read_rows(run_dir / "metrics.jsonl")
    print(table(kills))
    print(
        f"\n{len(kills)} SIGKILLs ({sum(k.target != 'random' for k in kills)} aimed), "
        f"{len(kills)} resumes, in {time.monotonic() - started:.0f} s; phases "
        f"{dict(Counter(kill.phase for kill in kills))}"
    )
    verified = [kill for kill in kills if kill.resumed_at is not None]
    right = sum(kill.resumed_at == (kill.checkpoint_iteration or 0) for kill in verified)
    print(
        f"the next process resumed from the checkpoint found after the kill: {right} of "
        f"{len(verified)} seen (the other {len(kills) - len(verified)} were killed again "
        "before TRPO.resume returned)"
    )
    print(
        f"final metrics.jsonl: {len(rows)} rows, iterations 1..{len(rows)} each once; "
        f"iterations redone in all: {sum(kill.redone for kill in kills)}; "
        f"temporary files seen right after kills: {sum(k.temporaries > 0 for k in kills)}"
    )
    if args.json:
        args.json.write_text(json.dumps([asdict(kill) for kill in kills], indent=1))
    if problems:
        print("\nPROBLEMS:\n" + "\n".join(problems))
        return 1
    print("no checkpoint unreadable, none lost, rows equal to the uninterrupted run's")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--child":
        separator = sys.argv.index("--")
        sys.exit(run_child(sys.argv[2], float(sys.argv[3]), sys.argv[separator + 1 :]))
    sys.exit(main())
