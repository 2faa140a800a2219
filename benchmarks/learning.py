"""Learning benchmark: deterministic returns along the whole curve, ours against sb3-contrib.

Each (library, task, seed) run is a subprocess (benchmarks/_ours_runner.py or
_sb3_runner.py) with RL Zoo's MuJoCo TRPO settings, evaluated deterministically (10 episodes)
every 50k steps and at the end. Results go to RESULTS_DIR/<library>/<task>/seed<k>/
(evals.jsonl, result.json). The summary gives, for every budget (100k, 300k, 1M, those the
runs reach), each task's mean with a bootstrap 95% interval, per seed, and the ratio of the
means; the aggregate is the mean over tasks of (our mean / sb3's mean). Then the training
time (evaluations excluded) each library's mean curve needs to first reach sb3's mean at
300k, and a figure of both libraries' mean curves against steps and against training time.

    python benchmarks/learning.py --jobs 2                      # everything (hours)
    python benchmarks/learning.py --libraries ours --seeds 0 1 2 --steps 300000
    python benchmarks/learning.py --libraries ours --set step_scaling=fisher --out R  # ablation
    python benchmarks/learning.py --summary-only --out R --sb3-out S --plot fig.png
    python benchmarks/learning.py --variants preset=R1 fvp=hessian=R2 --sb3-out S  # ablations
    python benchmarks/learning.py --libraries ours --preset default --out R  # tuned presets

``--sb3-out`` reads sb3-contrib's runs from another results directory (run once, compared
with several of ours). ``--sb3-anchor`` adds the sb3-contrib returns after 1M steps measured
on this kind of machine (shared/ANCHORS.md seeds 0-2, seeds 3-4 run here; on CPU a run is
deterministic) where no sb3 run of that length is there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TASKS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5")
BUDGETS = (100_000, 300_000, 1_000_000)
TARGET_BUDGET = 300_000  # the time-to-return measure: reach sb3's mean return at this budget
# sb3-contrib 2.9.2, RL Zoo settings, deterministic eval of 10 episodes after 1M steps,
# measured on a 2-core machine like ours: seeds 0-2 in shared/ANCHORS.md, seeds 3-4 run here
# with this script on 2026-11-26.
SB3_ANCHOR = {
    "HalfCheetah-v5": {0: 3642.0, 1: 4596.0, 2: 1632.0, 3: 4347.5, 4: 1194.0},
    "Hopper-v5": {0: 3493.0, 1: 702.0, 2: 1286.0, 3: 3706.3, 4: 3322.0},
    "Walker2d-v5": {0: 4999.0, 1: 4183.0, 2: 5004.0, 3: 3485.4, 4: 3743.7},
}


def run_one(
    library: str,
    task: str,
    seed: int,
    steps: int,
    out: Path,
    overrides: list[str],
    preset: str = "zoo",
) -> dict:
    run_dir = out / library / task / f"seed{seed}"
    result_file = run_dir / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    common = ["--env", task, "--steps", str(steps), "--seed", str(seed),
              "--eval-every", "50000", "--eval-episodes", "10"]  # fmt: skip
    if library == "ours":
        command = [sys.executable, str(HERE / "_ours_runner.py"), *common, "--run-dir",
                   str(run_dir), "--preset", preset, "--set", *overrides]  # fmt: skip
    else:
        command = [sys.executable, str(HERE / "_sb3_runner.py"), *common, "--out",
                   str(run_dir / "evals.jsonl")]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result_file.write_text(json.dumps(result))
    print(f"{library} {task} seed {seed}: return {result['final_return']:.0f}, "
          f"{result['wall_s']:.0f} s", flush=True)  # fmt: skip
    return result


def bootstrap_interval(values: list[float], rounds: int = 10_000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    samples = rng.choice(np.asarray(values), size=(rounds, len(values)), replace=True)
    means = samples.mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def load_curves(out: Path, library: str, task: str) -> dict[int, list[dict]]:
    """Per seed: the evaluation rows (step, mean_return, time = training seconds so far),
    the final evaluation last."""
    curves = {}
    for run_dir in sorted((out / library / task).glob("seed*")):
        if not (run_dir / "result.json").exists():
            continue
        result = json.loads((run_dir / "result.json").read_text())
        rows = [json.loads(line) for line in (run_dir / "evals.jsonl").read_text().splitlines()]
        if library == "ours" and (not rows or rows[-1]["step"] < result["steps"]):
            rows.append(dict(step=result["steps"], mean_return=result["final_return"],
                             time=result["wall_s"]))  # the runner's final evaluation  # fmt: skip
        by_step = {row["step"]: row for row in rows}  # sb3's last callback evaluation comes
        curves[int(result["seed"])] = list(by_step.values())  # before its final one: keep that
    return curves


def return_at(rows: list[dict], budget: int) -> float | None:
    """The evaluation at ``budget`` steps: at or after it, within one iteration (the last such:
    sb3's callback evaluates before the update of the iteration in progress, its final
    evaluation after it)."""
    found = [row for row in rows if budget <= row["step"] < budget + 4096]
    return float(found[-1]["mean_return"]) if found else None


def at_budget(curves: dict[int, list[dict]], budget: int) -> dict[int, float]:
    values = {seed: return_at(rows, budget) for seed, rows in curves.items()}
    return {seed: v for seed, v in values.items() if v is not None}


def describe(returns: dict[int, float]) -> str:
    if not returns:
        return "-"
    values = [returns[k] for k in sorted(returns)]
    low, high = bootstrap_interval(values)
    seeds = " / ".join(f"{v:,.0f}" for v in values)
    return f"{np.mean(values):,.0f} [{low:,.0f}, {high:,.0f}] ({seeds})"


def budget_table(ours: dict, sb3: dict, tasks: list[str], budget: int, anchor: bool) -> str:
    lines = [f"### {budget:,} steps", "",
             "| task | ours: mean [95% CI] (per seed) | sb3-contrib: mean [95% CI] (per seed) "
             "| ratio |", "|---|---|---|---|"]  # fmt: skip
    ratios = []
    for task in tasks:
        mine, theirs = at_budget(ours[task], budget), at_budget(sb3[task], budget)
        if anchor and budget == 1_000_000:
            theirs = {**SB3_ANCHOR.get(task, {}), **theirs}
        ratio = np.mean(list(mine.values())) / np.mean(list(theirs.values())) if (
            mine and theirs) else None  # fmt: skip
        if ratio is not None:
            ratios.append(ratio)
        shown = "-" if ratio is None else f"{ratio:.2f}"
        lines.append(f"| {task} | {describe(mine)} | {describe(theirs)} | {shown} |")
    if ratios:
        lines.append(f"\naggregate (mean over tasks of ours/sb3): {np.mean(ratios):.2f}; "
                     f"lowest task ratio {min(ratios):.2f}")  # fmt: skip
    return "\n".join(lines)


def mean_curve(curves: dict[int, list[dict]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean return, mean training time) over the seeds, evaluation by evaluation."""
    length = min(len(rows) for rows in curves.values())
    pick = lambda key: np.array([[rows[i][key] for i in range(length)]  # noqa: E731
                                 for rows in curves.values()]).mean(axis=0)  # fmt: skip
    return pick("step"), pick("mean_return"), pick("time")


def time_to_return(ours: dict, sb3: dict, tasks: list[str]) -> str:
    lines = [f"### Training time to first reach sb3-contrib's mean return at "
             f"{TARGET_BUDGET:,} steps (mean curves over seeds)", "",
             "| task | target return | ours: steps, s | sb3-contrib: steps, s | time ratio |",
             "|---|---|---|---|---|"]  # fmt: skip
    for task in tasks:
        target = at_budget(sb3[task], TARGET_BUDGET)
        if not target or not ours[task]:
            continue
        goal = float(np.mean(list(target.values())))
        cells = []
        for curves in (ours[task], sb3[task]):
            steps, returns, times = mean_curve(curves)
            hit = np.nonzero(returns >= goal)[0]
            cells.append(None if len(hit) == 0 else (steps[hit[0]], times[hit[0]]))
        shown = ["not reached" if c is None else f"{c[0]:,.0f}, {c[1]:,.0f} s" for c in cells]
        ratio = f"{cells[0][1] / cells[1][1]:.2f}" if None not in cells else "-"
        lines.append(f"| {task} | {goal:,.0f} | {shown[0]} | {shown[1]} | {ratio} |")
    return "\n".join(lines)


def plot(ours: dict, sb3: dict, tasks: list[str], path: Path) -> None:
    """Mean return (band: min-max over seeds) against steps and against training time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(tasks), figsize=(5 * len(tasks), 7), squeeze=False)
    for column, task in enumerate(tasks):
        for name, curves, color in (("ours", ours[task], "C0"), ("sb3-contrib", sb3[task], "C1")):
            if not curves:
                continue
            steps, returns, times = mean_curve(curves)
            length = len(steps)
            per_seed = np.array([[r["mean_return"] for r in rows[:length]]
                                 for rows in curves.values()])  # fmt: skip
            label = f"{name} ({len(curves)} seeds)"
            for row, x in ((0, steps), (1, times)):
                axes[row][column].plot(x, returns, color=color, label=label)
                axes[row][column].fill_between(x, per_seed.min(0), per_seed.max(0),
                                               color=color, alpha=0.15)  # fmt: skip
        axes[0][column].set_title(task)
        axes[0][column].set_xlabel("env steps")
        axes[1][column].set_xlabel("training seconds (evaluations excluded)")
        axes[0][column].legend()
        for row in (0, 1):
            axes[row][column].set_ylabel("deterministic return")
    figure.tight_layout()
    figure.savefig(path, dpi=90)


def variants_table(variants: list[str], sb3_out: Path, tasks: list[str], budget: int) -> str:
    """One row per ``NAME=RESULTS_DIR`` (our runs with some setting changed): each task's mean
    return at ``budget`` with its interval and seeds, and the ratio to sb3-contrib's mean."""
    sb3 = {task: at_budget(load_curves(sb3_out, "sb3", task), budget) for task in tasks}
    header = " | ".join(tasks)
    anchor = " | ".join(describe(sb3[t]) for t in tasks)
    lines = [f"### Variants at {budget:,} steps (ratio: our mean / sb3-contrib's)", "",
             f"| variant | {header} | aggregate |", "|---" * (len(tasks) + 2) + "|",
             f"| sb3-contrib | {anchor} | 1.00 |"]  # fmt: skip
    for variant in variants:
        name, _, directory = variant.rpartition("=")
        cells, ratios = [], []
        for task in tasks:
            returns = at_budget(load_curves(Path(directory), "ours", task), budget)
            ratio = np.mean(list(returns.values())) / np.mean(list(sb3[task].values())) if (
                returns and sb3[task]) else None  # fmt: skip
            if ratio is not None:
                ratios.append(ratio)
            cells.append(describe(returns) + ("" if ratio is None else f" ({ratio:.2f})"))
        aggregate = f"{np.mean(ratios):.2f}" if ratios else "-"
        lines.append(f"| {name} | {' | '.join(cells)} | {aggregate} |")
    return "\n".join(lines)


def summary(out: Path, sb3_out: Path, tasks: list[str], anchor: bool) -> tuple[str, dict, dict]:
    ours = {task: load_curves(out, "ours", task) for task in tasks}
    sb3 = {task: load_curves(sb3_out, "sb3", task) for task in tasks}
    tables = [budget_table(ours, sb3, tasks, b, anchor) for b in BUDGETS]
    tables.append(time_to_return(ours, sb3, tasks))
    if anchor:
        tables.append("sb3-contrib at 1M where not run: shared/ANCHORS.md and earlier runs here")
    return "\n\n".join(tables), ours, sb3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--libraries", nargs="+", default=["ours", "sb3"])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--out", type=Path, default=Path("results/learning"))
    parser.add_argument("--sb3-out", type=Path, default=None, help="sb3 runs (default: --out)")
    parser.add_argument("--set", nargs="*", default=[], help="our config overrides key=value")
    parser.add_argument(
        "--preset",
        choices=("zoo", "default"),
        default="zoo",
        help="ours at RL Zoo's settings (as sb3) or our default (tuned) presets",
    )
    parser.add_argument("--sb3-anchor", action="store_true")
    parser.add_argument("--summary-only", action="store_true")
    parser.add_argument("--plot", type=Path, default=None, help="write the curves' figure")
    parser.add_argument("--json", type=Path, default=None, help="write every curve as JSON")
    parser.add_argument("--variants", nargs="*", default=[], metavar="NAME=DIR",
                        help="only a table of these result directories at --budget")  # fmt: skip
    parser.add_argument("--budget", type=int, default=300_000)
    args = parser.parse_args()
    if args.variants:
        print(variants_table(args.variants, args.sb3_out or args.out, args.tasks, args.budget))
        return
    if not args.summary_only:
        jobs = [(lib, task, seed) for seed in args.seeds for task in args.tasks
                for lib in args.libraries]  # fmt: skip
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            futures = [
                pool.submit(run_one, *job, args.steps, args.out, args.set, args.preset)
                for job in jobs
            ]
            for future in futures:
                future.result()
    text, ours, sb3 = summary(args.out, args.sb3_out or args.out, args.tasks, args.sb3_anchor)
    print(text)
    if args.plot:
        plot(ours, sb3, args.tasks, args.plot)
    if args.json:
        args.json.write_text(json.dumps({"ours": ours, "sb3": sb3}, indent=1))


if __name__ == "__main__":
    main()
