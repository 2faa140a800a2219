"""Looking at results: `trpo plot` PNGs, `trpo eval --video` MP4s, `--tensorboard` event files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

import rl
from rl.cli import main
from rl.plot import _cumulative_seconds, group_runs, plot_runs, read_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fake_run(directory: Path, seed: int, max_kl: float = 0.01, iterations: int = 20) -> Path:
    """A run directory as `trpo train` writes it, with a made-up rising return."""
    directory.mkdir(parents=True)
    config = rl.TRPOConfig(env_id="Pendulum-v1", seed=seed, max_kl=max_kl, run_dir=str(directory))
    (directory / "config.yaml").write_text(config.to_yaml())
    rng = np.random.default_rng(seed)
    rows = [{"step": 2048, "iteration": 1, "episode_return_mean": None, "time": 1.0}]
    for i in range(2, iterations + 1):
        value = -1200 + 50 * i + float(rng.normal(0, 20))
        rows.append({"step": 2048 * i, "iteration": i, "episode_return_mean": value, "time": i})
    (directory / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    evals = [{"step": 20480, "mean_return": -700.0 + seed, "std_return": 5.0, "time": 11.0}]
    (directory / "evals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    return directory


def test_plot_writes_a_png_of_several_seeds(tmp_path):
    runs = [fake_run(tmp_path / f"seed{seed}", seed) for seed in range(3)]
    out = plot_runs(runs, tmp_path / "plots" / "returns.png")
    assert out.read_bytes()[:8] == PNG_SIGNATURE and out.stat().st_size > 10_000


def test_runs_differing_only_in_seed_form_one_group_labelled_by_what_differs(tmp_path):
    runs = [read_run(fake_run(tmp_path / f"a{seed}", seed)) for seed in range(2)]
    runs.append(read_run(fake_run(tmp_path / "b", 0, max_kl=0.02)))
    groups = group_runs(runs)
    assert [len(members) for _, members in groups] == [2, 1]
    assert groups[0][0] == "Pendulum-v1 (max_kl=0.01) [2 runs]"
    assert groups[1][0] == "Pendulum-v1 (max_kl=0.02) [1 run]"


def test_rows_without_a_return_are_skipped_and_resumed_time_accumulates(tmp_path):
    run = read_run(fake_run(tmp_path / "r", 0))
    assert run.steps[0] == 4096 and len(run.steps) == len(run.returns) == 19
    assert _cumulative_seconds([1.0, 2.0, 0.5, 1.5]) == [1.0, 2.0, 2.5, 3.5]


def test_cli_plot_defaults_to_the_run_directory_and_reads_folders_of_runs(tmp_path, capsys):
    single = fake_run(tmp_path / "one", 0)
    assert main(["plot", str(single)]) == 0
    assert (single / "returns.png").read_bytes()[:8] == PNG_SIGNATURE
    fake_run(tmp_path / "many" / "s0", 0)
    fake_run(tmp_path / "many" / "s1", 1)
    out = tmp_path / "evals.png"
    assert main(["plot", str(tmp_path / "many"), "--out", str(out), "--eval"]) == 0
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {out}"


def test_cli_plot_of_a_directory_without_runs_is_a_usage_error(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    assert "no metrics.jsonl in it or below" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "cartpole"
    config = rl.TRPOConfig.from_preset(
        "CartPole-v1", total_steps=512, steps_per_iteration=512, run_dir=str(run_dir)
    )
    rl.TRPO(config).learn(progress="none").close()
    return run_dir


@pytest.mark.skipif(importlib.util.find_spec("moviepy") is None, reason="needs moviepy")
def test_eval_video_records_episodes_with_record_video(trained_run, tmp_path, capsys):
    video_dir = tmp_path / "videos"
    assert main(["eval", str(trained_run), "--video", str(video_dir), "--episodes", "2"]) == 0
    videos = sorted(video_dir.glob("*.mp4"))
    assert len(videos) == 2 and all(video.stat().st_size > 0 for video in videos)
    out = capsys.readouterr().out
    assert out.startswith("mean return ") and f"video: {videos[0]}" in out


def test_eval_video_without_moviepy_names_what_to_install(
    trained_run, tmp_path, capsys, monkeypatch
):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "moviepy" else find_spec(name, *a),
    )
    assert main(["eval", str(trained_run), "--video", str(tmp_path / "v")]) == 2
    assert "needs moviepy: pip install moviepy" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="needs tensorboard")
def test_tensorboard_logs_alongside_metrics(tmp_path):
    run_dir = tmp_path / "tb"
    code = main(
        ["train", "CartPole-v1", "--total-steps", "512", "--run-dir", str(run_dir),
         "--set", "steps_per_iteration=256", "--set", "eval_episodes=1", "--quiet",
         "--tensorboard"]
    )  # fmt: skip
    assert code == 0
    assert (run_dir / "metrics.jsonl").read_text().count("\n") == 2
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert {"train/kl", "train/episode_return_mean", "eval/mean_return"} <= set(tags)
    assert [event.step for event in accumulator.Scalars("train/kl")] == [256, 512]


def test_tensorboard_missing_is_a_one_line_error_naming_the_package(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("rl.cli_train.tensorboard_available", lambda: False)
    code = main(
        ["train", "CartPole-v1", "--total-steps", "256", "--run-dir", str(tmp_path / "r"),
         "--set", "steps_per_iteration=256", "--quiet", "--tensorboard"]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install tensorboard" in err


def test_plot_of_a_real_run(trained_run, tmp_path):
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["env_id"] == "CartPole-v1"
    out = plot_runs([trained_run], tmp_path / "real.png")
    assert out.read_bytes()[:8] == PNG_SIGNATURE
