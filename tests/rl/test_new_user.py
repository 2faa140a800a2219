"""What a new user hits first: SB3 habits, a bare `trpo`, misspelt names, missing paths."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np
import pytest
import toy_envs
from test_atari_images import BlobSideEnv, blob_config
from test_plot import PNG_SIGNATURE, fake_run

import rl.video
from rl import TRPO, TRPOAgent, TRPOConfig
from rl.cli import main
from rl.config import ConfigError


# ----------------------------------------------------------------------------- SB3 habits
def test_an_env_id_builds_the_agent_from_its_preset() -> None:
    agent = TRPO("CartPole-v1")
    assert agent.config == TRPOConfig.from_preset("CartPole-v1")
    agent.close()


def test_anything_else_in_place_of_the_config_is_a_type_error_showing_the_call() -> None:
    with pytest.raises(TypeError, match=r"TRPO takes a TRPOConfig or an env id, got dict.*"
                       r"TRPO\('CartPole-v1'\)"):  # fmt: skip
        TRPO({"env_id": "CartPole-v1"})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        ({"target_kl": 0.01}, "'target_kl': did you mean 'max_kl' (for continuous actions"),
        ({"n_steps": 512}, "'n_steps': did you mean 'steps_per_iteration' (= n_steps x num_envs)?"),
        ({"total_timesteps": 10}, "'total_timesteps': did you mean 'total_steps'?"),
        ({"n_critic_updates": 5}, "'n_critic_updates': did you mean 'value.epochs'?"),
        ({"gae_lambda": 0.9}, "'gae_lambda': did you mean 'lam'?"),
        ({"max_kll": 0.01}, "'max_kll': did you mean 'max_kl'?"),
        ({"value": {"epoch": 3}}, "'value.epoch': did you mean 'value.epochs'?"),
    ],
)
def test_unknown_fields_name_what_was_probably_meant(data, hint) -> None:
    with pytest.raises(ConfigError) as error:
        TRPOConfig.from_dict(data)
    assert str(error.value).startswith(f"unknown config field {hint}")


def test_an_unknown_field_with_nothing_close_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"^unknown config field 'zzz' \(allowed: accept_ratio"):
        TRPOConfig.from_dict({"zzz": 1})


def test_trpo_agent_loads_what_it_saved_and_acts_the_same(tmp_path) -> None:
    env = gym.make("CartPole-v1")
    agent = TRPOAgent(4, 2, discrete=True, hidden_dim=16)
    agent.train(env, num_epochs=1, steps_per_epoch=256)
    agent.save(str(tmp_path / "agent.pt"))
    loaded = TRPOAgent.load(str(tmp_path / "agent.pt"), gym.make("CartPole-v1"))
    observations = [env.reset(seed=seed)[0] for seed in range(20)]
    assert [agent.act(o) for o in observations] == [loaded.act(o) for o in observations]
    assert (loaded.state_dim, loaded.action_dim, loaded.discrete) == (4, 2, True)
    with pytest.raises(ValueError, match="do not fit"):  # rl.run_files.CheckpointError
        TRPOAgent.load(str(tmp_path / "agent.pt"), gym.make("MountainCar-v0"))


# ----------------------------------------------------------------------------- the CLI
def test_a_bare_trpo_prints_its_usage_and_commands(capsys) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: trpo") and "train" in err and "presets" in err


def test_trpo_version_prints_the_installed_version(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"trpo {_installed_version()}"


def _installed_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("trust-region")


def test_eval_of_a_missing_directory_says_it_does_not_exist(tmp_path, capsys) -> None:
    assert main(["eval", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("no such directory") and len(err.splitlines()) == 1


def test_a_preset_of_another_version_is_suggested(capsys) -> None:
    assert main(["presets", "HalfCheetah-v4"]) == 2
    assert "no preset; did you mean 'HalfCheetah-v5'?" in capsys.readouterr().err


def test_training_an_env_without_preset_names_the_version_that_has_one(tmp_path, capsys) -> None:
    code = main([
        "train", "CartPole-v0", "--total-steps", "64", "--run-dir", str(tmp_path / "r"),
        "--set", "steps_per_iteration=64", "--set", "eval_episodes=1",
    ])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "no preset for CartPole-v0, plain defaults apply (a preset exists for CartPole-v1" in out


def test_plot_prints_the_path_it_actually_wrote(tmp_path, capsys) -> None:
    run = fake_run(tmp_path / "run", 0)
    assert main(["plot", str(run), "--out", str(tmp_path / "curves")]) == 0
    written = tmp_path / "curves.png"
    assert capsys.readouterr().out.strip() == f"wrote {written}"
    assert written.read_bytes()[:8] == PNG_SIGNATURE


# ------------------------------------------------------------ predict on batches of every kind
def _batch_matches_one_by_one(agent: TRPO, observations: list) -> None:
    singles = np.stack([np.asarray(agent.predict(o)) for o in observations])
    batch = stacked(observations)
    # float32 matmuls of a batch may round differently from one row's: equal to 1e-5
    np.testing.assert_allclose(agent.predict(batch), singles, rtol=1e-5, atol=1e-7)


def stacked(observations: list):
    """A batch as a vector env returns it: arrays stacked, Dicts stacked key by key."""
    if isinstance(observations[0], dict):
        return {key: np.stack([o[key] for o in observations]) for key in observations[0]}
    return np.stack(observations)


def test_predict_on_a_batch_of_flat_observations_gives_a_batch() -> None:
    agent = TRPO(TRPOConfig(env_id="Pendulum-v1", normalize_observations=True, total_steps=64,
                            steps_per_iteration=64))  # fmt: skip
    env = gym.make("Pendulum-v1")
    _batch_matches_one_by_one(agent, [env.reset(seed=s)[0] for s in range(7)])


def test_predict_on_a_batch_of_dict_observations_gives_a_batch() -> None:
    agent = TRPO(TRPOConfig(total_steps=64, steps_per_iteration=64),
                 env_fn=toy_envs.MultiDiscreteTargetEnv)  # fmt: skip
    env = toy_envs.MultiDiscreteTargetEnv()
    _batch_matches_one_by_one(agent, [env.reset(seed=s)[0] for s in range(5)])


def test_predict_on_a_batch_of_images_gives_a_batch() -> None:
    agent = TRPO(blob_config(), env_fn=BlobSideEnv)
    env = BlobSideEnv()
    _batch_matches_one_by_one(agent, [env.reset(seed=s)[0] for s in range(6)])


def test_predict_names_the_shapes_it_accepts() -> None:
    agent = TRPO(blob_config(), env_fn=BlobSideEnv)
    with pytest.raises(ValueError, match=r"fits neither the observation space .* \(B, \*"):
        agent.predict(np.zeros((2, 3), dtype=np.uint8))


# ------------------------------------------------------------ rendering MuJoCo without a display
def test_without_a_display_an_offscreen_opengl_backend_is_chosen(monkeypatch) -> None:
    monkeypatch.setattr(rl.video.sys, "platform", "linux")
    found = {"EGL": None, "OSMesa": "libOSMesa.so.8"}
    monkeypatch.setattr(rl.video.ctypes.util, "find_library", found.get)
    environ: dict[str, str] = {}
    assert rl.video.use_offscreen_rendering(environ) == "osmesa"
    assert environ == {"MUJOCO_GL": "osmesa", "PYOPENGL_PLATFORM": "osmesa"}
    found["EGL"] = "libEGL.so.1"
    assert rl.video.use_offscreen_rendering(environ := {}) == "egl"
    for chosen in ({"DISPLAY": ":0"}, {"MUJOCO_GL": "glfw"}, {"WAYLAND_DISPLAY": "w"}):
        assert rl.video.use_offscreen_rendering(dict(chosen)) is None


def test_mujoco_renders_a_frame_headless_in_a_fresh_process(tmp_path) -> None:
    """What `trpo eval --video` does first, then a MuJoCo frame (skipped without EGL/OSMesa)."""
    import ctypes.util
    import subprocess
    import sys

    if not (ctypes.util.find_library("EGL") or ctypes.util.find_library("OSMesa")):
        pytest.skip("neither EGL nor OSMesa is installed")
    code = (
        "from rl.video import use_offscreen_rendering; use_offscreen_rendering()\n"
        "import gymnasium as gym\n"
        "env = gym.make('InvertedPendulum-v5', render_mode='rgb_array'); env.reset(seed=0)\n"
        "print(env.render().shape)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MUJOCO_GL")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.strip().splitlines()[-1] == "(480, 480, 3)"


def test_the_live_table_fits_80_columns_with_whole_headers() -> None:
    import io

    from rich.console import Console

    from rl.progress import RichProgress

    progress = RichProgress(1_000_000, stream=io.StringIO())
    progress.live.stop()
    row = {"iteration": 1234, "step": 999_424, "episode_return_mean": -12345.6,
           "episode_length_mean": 1000.0, "kl": 0.0123, "entropy": -7.659,
           "value_loss": 0.0606, "explained_variance": -0.52, "backtracks": 10,
           "accepted": True, "fps": 6000.0}  # fmt: skip
    console = Console(width=80, record=True, file=io.StringIO())
    console.print(progress._table(row))
    header, values = console.export_text().splitlines()[:2]
    assert "…" not in header + values and len(header.rstrip()) <= 80
    assert header.split() == ["iter", "return", "length", "kl", "entropy", "v", "loss", "ev",
                              "backtr", "accepted"]  # fmt: skip
    assert values.split() == ["1234", "-12345.6", "1000", "0.0123", "-7.659", "0.0606", "-0.52",
                              "10", "yes"]  # fmt: skip


def test_the_cli_imports_matplotlib_only_to_draw() -> None:
    """`trpo train/eval/...` start without matplotlib (about 0.4 s of import)."""
    import subprocess
    import sys

    code = "import sys, rl.cli; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr[-500:]
