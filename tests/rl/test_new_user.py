"""What a new user hits first: SB3 habits, a bare `trpo`, misspelt names, missing paths."""

from __future__ import annotations

import gymnasium as gym
import pytest
from test_plot import PNG_SIGNATURE, fake_run

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
    with pytest.raises(ValueError, match="do not fit"):  # rl.checkpoint.CheckpointError
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
