"""`trpo tune`: a tiny CartPole study end to end, killed with SIGKILL and resumed, and its
one-line usage errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from rl import TRPOConfig
from rl.cli import main
from rl.tune_space import DEFAULT_SPACE, baseline_params, fit_budget, load_space, suggest, to_config
from rl.tune_study import load_study
from tests.conftest import rows

TUNE = [sys.executable, "-c", "import sys; from rl.cli import main; sys.exit(main())", "tune"]
FAST = ["--set", "eval_episodes=2", "--set", "policy.hidden_sizes=[16]", "--set",
        "value.minibatch_size=256", "--set", "value.epochs=5"]  # fmt: skip


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``trpo ARGS`` in a fresh interpreter, stdout not a TTY."""
    return subprocess.run(
        [*TUNE[:3], *args], capture_output=True, text=True, timeout=timeout
    )  # fmt: skip


def trials_of(study_dir: Path) -> list[optuna.trial.FrozenTrial]:
    return load_study(study_dir).get_trials(deepcopy=False)


def test_tiny_study_completes_and_its_best_yaml_trains(tmp_path):
    study_dir = tmp_path / "study"
    result = run_cli("tune", "CartPole-v1", "--trials", "4", "--budget", "1024", "--jobs", "2",
                     "--study-dir", str(study_dir), *FAST)  # fmt: skip
    assert result.returncode == 0, result.stderr
    trials = trials_of(study_dir)
    assert [trial.state for trial in trials] == [TrialState.COMPLETE] * 4  # 5 startup trials
    for trial in trials:
        run_dir = study_dir / "trials" / f"{trial.number:04d}-seed0"
        assert (run_dir / "model.pt").is_file() and (run_dir / "evals.jsonl").is_file()
        assert trial.intermediate_values and max(trial.intermediate_values) >= 1024
        assert trial.value == trial.user_attrs["seed_returns"]["0"]
        assert {"hidden_sizes", "value.epochs"}.isdisjoint(trial.user_attrs["values"])  # fixed
        marker = " (the base config)" if trial.number == 0 else ""
        assert f"trial {trial.number}{marker} complete: {trial.value:.2f}" in result.stdout
    assert f"{len(trials)} trials (4 complete" in result.stdout.splitlines()[-1]
    # the first trial is the preset's own values (policy.hidden_sizes fixed: not searched)
    preset, first = TRPOConfig.from_preset("CartPole-v1"), trials[0]
    assert first.user_attrs["base_config"] and first.params["log2(steps_per_env)"] == 9
    assert {key: first.user_attrs["values"][key] for key in ("gamma", "lam", "max_kl")} == {
        "gamma": preset.gamma, "lam": preset.lam, "max_kl": preset.max_kl}  # fmt: skip
    assert first.user_attrs["values"]["cg_iters"] == preset.cg_iters
    assert "draws" not in result.stderr  # the space holds all of the preset's searched values
    assert "base_config" not in trials[1].user_attrs
    best = max(trials, key=lambda trial: trial.value)
    text = (study_dir / "best.yaml").read_text()
    assert f"trial {best.number} " in text and "seeds used while tuning: [0]" in text
    config = yaml.safe_load(text)
    assert config["env_id"] == "CartPole-v1" and "run_dir" not in config
    assert config["policy"]["hidden_sizes"] == [16] and config["total_steps"] == 100_000
    assert config["max_kl"] == pytest.approx(best.user_attrs["values"]["max_kl"])
    assert load_study(study_dir).user_attrs["seeds_used"] == [0]
    trained = run_cli("train", str(study_dir / "best.yaml"), "--total-steps", "64", "--quiet",
                      "--run-dir", str(tmp_path / "run"))  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert TRPOConfig.from_file(tmp_path / "run" / "config.yaml").gamma == config["gamma"]


def _descendants(pid: int) -> set[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_leaves_no_trial_running_and_resume_keeps_completed_trials(tmp_path):
    study_dir = tmp_path / "study"
    tune = subprocess.Popen([*TUNE, "CartPole-v1", "--trials", "4", "--budget", "6144",
                             "--jobs", "2", "--study-dir", str(study_dir), *FAST],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if not (study_dir / "journal.log").is_file():
                continue
            trials = trials_of(study_dir)
            states = [trial.state for trial in trials]
            if TrialState.COMPLETE in states and any(
                trial.state == TrialState.RUNNING and trial.intermediate_values for trial in trials
            ):
                break
        else:
            pytest.fail("no moment with a trial complete and another one training")
        processes = _descendants(tune.pid)
        running = {t.user_attrs.get("pid") for t in trials if t.state == TrialState.RUNNING}
        assert running & processes  # trial processes among those that must die
        tune.send_signal(signal.SIGKILL)
        tune.wait()
    finally:
        tune.kill()
    deadline = time.monotonic() + 15  # the value-fit children check their parent each second
    while any(map(_alive, processes)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in processes if _alive(pid)]
    done = {t.number: t.value for t in trials_of(study_dir) if t.state == TrialState.COMPLETE}
    resumed = run_cli("tune", "--resume", str(study_dir), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.count("\n") == 1 and "4 trials (4 complete" in resumed.stdout
    after = trials_of(study_dir)
    assert len(after) == 4 and all(trial.state == TrialState.COMPLETE for trial in after)
    assert {number: after[number].value for number in done} == done
    for run_dir in (study_dir / "trials").glob("*-seed0"):  # taken over: each iteration once
        iterations = [row["iteration"] for row in rows(run_dir)]
        assert iterations == list(range(1, len(iterations) + 1))


def _study_of(env_id: str, study_dir: Path) -> None:
    study_dir.mkdir()
    load_study(study_dir).set_user_attr("settings", {"env_id": env_id})


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["CartPole-v1", "--space", "SPACE"], "unknown search space parameter 'max_kll'"),
        (["CartPole-v1", "--budget", "100", "--set", "steps_per_iteration=1024"],
         "--budget 100 is smaller than one iteration (steps_per_iteration = 1024)"),
        (["CartPole-v1", "--budget", "10"], "--budget 10 is smaller than one iteration"),
        (["CartPole-v1", "--study-dir", "OTHER"], "holds a study of env_id = 'Pendulum-v1'"),
        (["--resume", "OTHER", "--trials", "3"], "--trials cannot be given with it"),
        (["--resume", "NOWHERE"], "no study there"),
        (["NoSuchEnv-v0"], "env_id = 'NoSuchEnv-v0'"),
        (["CartPole-v1", "--set", "gamma=2"], "gamma = 2"),
        (["CartPole-v1", "--trials", "0"], "must be a positive number, got '0'"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line_naming_the_field(args, expected, tmp_path, capsys):
    (tmp_path / "space.yaml").write_text("max_kll: {low: 0.01, high: 0.1}\n")
    _study_of("Pendulum-v1", tmp_path / "other")
    paths = {"SPACE": tmp_path / "space.yaml", "OTHER": tmp_path / "other",
             "NOWHERE": tmp_path / "nowhere"}  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main(["tune", *(str(paths.get(arg, arg)) for arg in args)]))
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert expected in captured.err and captured.out == ""
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err


def test_every_sampled_point_of_the_default_space_is_a_valid_config():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = fit_budget(load_space(None), budget=4096, num_envs=4)
    assert space["steps_per_env"]["high"] == 1024
    for _ in range(20):
        values = suggest(study.ask(), space)
        assert set(values) == set(DEFAULT_SPACE)
        config = TRPOConfig.from_dict({"env_id": "Hopper-v5", "num_envs": 4,
                                       **to_config(values, num_envs=4)})  # fmt: skip
        assert config.steps_per_iteration == 4 * values["steps_per_env"] <= 4096
        assert config.policy.hidden_sizes == config.value.hidden_sizes
        assert 0.97 <= config.gamma <= 0.9999 and 0.001 <= config.max_kl <= 0.3


def test_baseline_params_encode_the_base_values_the_space_holds_and_skip_the_others():
    base = TRPOConfig.from_dict(
        {
            "env_id": "Hopper-v5",
            "num_envs": 2,
            "steps_per_iteration": 2048,
            "gamma": 0.995,
            "max_kl": 0.5,
            "value": {"hidden_sizes": [256, 256], "minibatch_size": 96},
        }
    )
    params, left = baseline_params(DEFAULT_SPACE, base.model_dump(mode="json"))
    assert params["log2(steps_per_env)"] == 10 and params["1-gamma"] == pytest.approx(0.005)
    assert params["activation"] == "tanh" and params["cg_iters"] == base.cg_iters
    # max_kl 0.5 > 0.3, minibatch 96 not a power of two, policy [64, 64] vs value [256, 256]
    assert {"max_kl", "log2(value.minibatch_size)", "hidden_sizes"}.isdisjoint(params)
    assert left == [
        "value.minibatch_size (its 96 is not a power of two)",
        "max_kl (its 0.5 is outside 0.001 to 0.3)",
        "hidden_sizes (the policy's and the value's differ: [64, 64], [256, 256])",
    ]
    signed = {"policy.log_std_init": {"low": -3.0, "high": -1.0}}  # a negative linear value
    ant = TRPOConfig.from_preset("Ant-v5").model_dump(mode="json")
    assert baseline_params(signed, ant) == ({"policy.log_std_init": -2.0}, [])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(params)
    values = suggest(study.ask(), DEFAULT_SPACE)
    assert values["steps_per_env"] == 1024 and values["gamma"] == 0.995
    assert values["value.learning_rate"] == base.value.learning_rate


def test_space_file_replaces_adds_and_removes_parameters(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "max_kl: {choices: [0.01, 0.02]}\nlam: null\ndamping: {low: 0.01, high: 1.0, scale: log}\n"
    )
    space = load_space(path)
    assert space["max_kl"] == {"choices": [0.01, 0.02]} and "lam" not in space
    assert space["damping"]["scale"] == "log" and space["gamma"] == DEFAULT_SPACE["gamma"]


def test_the_reporter_reports_each_evaluation_and_prunes_only_before_the_budget() -> None:
    from rl.tune_trial import _Pruned, _Reporter

    class FakeTrial:
        def __init__(self) -> None:
            self.reported: list[tuple[float, int]] = []

        def report(self, value: float, step: int) -> None:
            self.reported.append((value, step))

        def should_prune(self) -> bool:
            return len(self.reported) >= 2

    trial = FakeTrial()
    reporter = _Reporter(trial, offset=3000, total_steps=1000)  # type: ignore[arg-type]
    reporter.evaluation({"step": 500, "mean_return": 1.5})
    with pytest.raises(_Pruned):
        reporter.evaluation({"step": 800, "mean_return": 2.5})
    reporter.evaluation({"step": 1000, "mean_return": 3.5})  # at the budget: the trial's value
    assert trial.reported == [(1.5, 3500), (2.5, 3800), (3.5, 4000)]
