"""Presets are data validated by TRPOConfig; `trpo presets` lists them; `trpo train` uses them."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import yaml

from rl import TRPOConfig
from rl.cli import main
from rl.presets import PresetFileError, _read_preset_file, all_presets, find_preset

ZOO_COMMIT = "22e3ff2450fd92033f7f032915e1f64894a09584"
BASELINES_COMMIT = "ea25b9e8b234e6ee1bca43083f8f3cf974143998"


def example_id(env_id: str) -> str:
    """A concrete env id for a preset key (patterns get a game)."""
    return env_id.replace("*", "Pong")


@pytest.mark.parametrize("preset", all_presets(), ids=lambda preset: preset.env_id)
def test_every_preset_validates_and_is_not_the_plain_defaults(preset):
    env_id = example_id(preset.env_id)
    config = TRPOConfig.from_preset(env_id)
    assert config.env_id == env_id
    assert config != TRPOConfig(env_id=env_id)
    assert config.steps_per_iteration % config.num_envs == 0


@pytest.mark.parametrize(
    "preset", [p for p in all_presets() if not p.is_pattern], ids=lambda p: p.env_id
)
def test_every_exact_preset_names_a_registered_gymnasium_env(preset):
    gym.spec(preset.env_id)


def test_each_file_cites_its_source_with_a_commit():
    for preset in all_presets():
        assert ZOO_COMMIT in preset.source or BASELINES_COMMIT in preset.source, preset.file


def test_the_covered_tasks():
    names = {preset.env_id for preset in all_presets()}
    assert {"CartPole-v1", "Acrobot-v1", "MountainCar-v0", "Pendulum-v1"} <= names
    assert {"MountainCarContinuous-v0", "LunarLander-v3", "LunarLanderContinuous-v3"} <= names
    assert {"BipedalWalker-v3", "HalfCheetah-v5", "Hopper-v5", "Walker2d-v5"} <= names
    assert {"Ant-v5", "Humanoid-v5", "Swimmer-v5", "ALE/*-v5"} <= names


def test_gsde_presets_say_so():
    for env_id in ("Pendulum-v1", "MountainCarContinuous-v0"):
        assert "gSDE" in find_preset(env_id).note


def test_values_carry_the_sources_settings():
    cheetah = TRPOConfig.from_preset("HalfCheetah-v5", source="zoo")
    assert (cheetah.max_kl, cheetah.cg_iters, cheetah.value.epochs) == (0.24, 25, 20)
    assert cheetah.normalize_observations and cheetah.normalize_rewards
    assert TRPOConfig.from_preset("Hopper-v5").max_kl == 0.01  # measured better (its note)
    assert TRPOConfig.from_preset("Swimmer-v5").gamma == 0.9999
    assert TRPOConfig.from_preset("Humanoid-v5").total_steps == 2_000_000
    lander = TRPOConfig.from_preset("LunarLander-v3")
    assert (lander.damping, lander.lam, lander.steps_per_iteration) == (0.01, 0.98, 1024)
    pendulum = TRPOConfig.from_preset("Pendulum-v1")
    assert pendulum.gamma == 0.9 and pendulum.total_steps == 100_000
    assert TRPOConfig.from_preset("MountainCarContinuous-v0").policy.log_std_init == 0.5
    assert TRPOConfig.from_preset("BipedalWalkerHardcore-v3").total_steps == 10_000_000


def test_atari_pattern_gives_baselines_settings_and_nature_cnn_head():
    pong, breakout = (
        TRPOConfig.from_preset("ALE/Pong-v5"),
        TRPOConfig.from_preset("ALE/Breakout-v5"),
    )
    assert pong.model_dump(exclude={"env_id"}) == breakout.model_dump(exclude={"env_id"})
    assert (pong.max_kl, pong.gamma, pong.lam, pong.damping) == (0.001, 0.98, 1.0, 0.001)
    assert (pong.num_envs, pong.steps_per_iteration, pong.fvp_subsample) == (16, 8192, 0.2)
    assert pong.policy.hidden_sizes == (512,) and pong.policy.activation == "relu"
    assert (pong.value.epochs, pong.value.minibatch_size, pong.value.learning_rate) == (3, 64, 1e-4)
    assert pong.atari.frame_stack == 4 and not pong.atari.terminal_on_life_loss
    assert find_preset("ALE/Pong-v4") is None


def test_plain_config_ignores_presets_and_overrides_win():
    assert TRPOConfig(env_id="HalfCheetah-v5").max_kl == 0.01
    config = TRPOConfig.from_preset("HalfCheetah-v5", max_kl=0.02, value={"epochs": 3})
    assert (config.max_kl, config.value.epochs, config.value.minibatch_size) == (0.02, 3, 1024)
    assert TRPOConfig.from_preset("Unknown-v0") == TRPOConfig(env_id="Unknown-v0")


def test_using_a_preset_does_not_change_it():
    before = find_preset("Hopper-v5").config["value"]["epochs"]
    TRPOConfig.from_preset("Hopper-v5", value={"epochs": 1})
    assert find_preset("Hopper-v5").config["value"]["epochs"] == before


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("presets: {}\n", "must hold exactly 'source' and 'presets'"),
        ("source: ''\npresets: {}\n", "'source' must be a non-empty string"),
        ("source: s\npresets: [1]\n", "'presets' must map env ids"),
        ("source: s\npresets:\n  X-v0: {gamma: 0.9}\n", "entry 'X-v0': must hold a 'config'"),
        ("source: s\npresets:\n  X-v0: {config: {}, why: 1}\n", "unknown key(s) ['why']"),
        ("source: s\npresets:\n  X-v0: {config: {env_id: Y-v0}}\n", "must not set env_id"),
    ],
)
def test_malformed_preset_files_are_refused_naming_file_and_entry(text, expected):
    with pytest.raises(PresetFileError) as error:
        _read_preset_file("bad.yaml", text)
    assert "preset file bad.yaml" in str(error.value) and expected in str(error.value)


def test_cli_lists_every_preset_with_its_source(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for preset in all_presets():
        assert preset.env_id in out
    assert ZOO_COMMIT in out and BASELINES_COMMIT in out


def test_cli_shows_one_preset_as_loadable_yaml(capsys):
    assert main(["presets", "HalfCheetah-v5"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# preset HalfCheetah-v5 from rl/presets/tuned.yaml")
    assert TRPOConfig.from_dict(yaml.safe_load(out)) == TRPOConfig.from_preset("HalfCheetah-v5")
    assert main(["presets", "HalfCheetah-v5", "--preset", "zoo"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# preset HalfCheetah-v5 from rl/presets/mujoco.yaml")
    zoo = TRPOConfig.from_preset("HalfCheetah-v5", source="zoo")
    assert TRPOConfig.from_dict(yaml.safe_load(out)) == zoo
    assert main(["presets", "Nope-v0"]) == 2
    assert "ENV_ID = 'Nope-v0': no preset" in capsys.readouterr().err


def test_train_prints_the_preset_and_what_was_overridden(tmp_path, capsys):
    run_dir = tmp_path / "cartpole"
    code = main(
        ["train", "CartPole-v1", "--total-steps", "256", "--run-dir", str(run_dir),
         "--set", "steps_per_iteration=256", "--set", "eval_episodes=1",
         "--set", "damping=0.001"]  # the preset's own value: not an override
    )  # fmt: skip
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("trpo: preset CartPole-v1 (rl/presets/classic_control.yaml; source:")
    assert "damping=0.001" in lines[1]
    assert lines[1].endswith("overridden here: steps_per_iteration, total_steps")
    config = TRPOConfig.from_file(run_dir / "config.yaml")
    assert (config.damping, config.steps_per_iteration) == (0.001, 256)


# The zoo's target_kl and cg_damping, which sb3-contrib applies to a Gaussian KL averaged
# over the action dimensions (ours is summed over them): rl_zoo3 hyperparams/trpo.yml.
ZOO_KL_AND_DAMPING = {
    "Ant-v5": (0.01, 0.1), "HalfCheetah-v5": (0.04, 0.1), "Hopper-v5": (0.01, 0.1),
    "Walker2d-v5": (0.01, 0.1), "Humanoid-v5": (0.01, 0.1), "Swimmer-v5": (0.01, 0.1),
    "LunarLanderContinuous-v3": (0.01, 0.1), "BipedalWalker-v3": (0.01, 0.1),
    "BipedalWalkerHardcore-v3": (0.01, 0.1), "Pendulum-v1": (0.01, 0.1),
    "MountainCarContinuous-v0": (0.01, 0.1),
}  # fmt: skip


# Which presets read the zoo's numbers in sb3-contrib's units (x A) and which in ours, as
# measured (docs/learning_ablation.md; Ant, Humanoid and BipedalWalker unmeasured: unchanged).
IN_SB3_UNITS = {"HalfCheetah-v5", "Walker2d-v5", "Pendulum-v1", "MountainCarContinuous-v0"}


@pytest.mark.parametrize("env_id", sorted(ZOO_KL_AND_DAMPING))
def test_continuous_presets_state_the_zoo_kl_and_damping_in_the_measured_units(env_id) -> None:
    """x A: sb3-contrib's step exactly; x 1: the zoo's numbers as our (summed) KL."""
    env = gym.make(env_id)
    dimensions = math.prod(env.action_space.shape)
    env.close()
    scale = dimensions if env_id in IN_SB3_UNITS else 1
    target_kl, cg_damping = ZOO_KL_AND_DAMPING[env_id]
    config = TRPOConfig.from_preset(env_id, source="zoo")
    assert config.max_kl == pytest.approx(target_kl * scale, rel=1e-12)
    assert config.damping == pytest.approx(cg_damping * scale, rel=1e-12)


def test_zoo_source_gives_rl_zoos_settings_where_no_study_did_better(tmp_path, capsys) -> None:
    for env_id in ("CartPole-v1", "Hopper-v5", "Walker2d-v5"):
        assert TRPOConfig.from_preset(env_id, source="zoo") == TRPOConfig.from_preset(env_id)
    for env_id in ("HalfCheetah-v5", "Ant-v5", "Swimmer-v5"):  # tuned here (tuned.yaml)
        assert TRPOConfig.from_preset(env_id, source="zoo") != TRPOConfig.from_preset(env_id)
    assert find_preset("ALE/Pong-v5", "zoo") is None  # OpenAI Baselines' numbers
    assert main(["train", "CartPole-v1", "--preset", "zoo", "--total-steps", "64", "--quiet",
                 "--run-dir", str(tmp_path / "run")]) == 0  # fmt: skip
    assert main(["train", "ALE/Pong-v5", "--preset", "zoo"]) == 2
    assert "--preset zoo: none for env_id = 'ALE/Pong-v5'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="Invalid preset source: 'mine'"):
        find_preset("CartPole-v1", "mine")


def test_a_tuned_preset_is_the_default_and_rl_zoos_stays_reachable(monkeypatch, capsys) -> None:
    import rl.presets

    zoo = "source: RL Baselines3 Zoo, x\npresets:\n  X-v0: {config: {gamma: 0.9}}\n"
    ours = "source: a study\npresets:\n  X-v0: {config: {gamma: 0.8}}\n"
    files = {"a.yaml": zoo, "b.yaml": ours}

    class Entry:
        def __init__(self, name: str) -> None:
            self.name = name

        def read_text(self, encoding: str) -> str:
            return files[self.name]

    class Directory:
        def iterdir(self):
            return [Entry(name) for name in files]

    monkeypatch.setattr(rl.presets.resources, "files", lambda _: Directory())
    rl.presets.all_presets.cache_clear()
    try:
        assert find_preset("X-v0").config["gamma"] == 0.8
        assert find_preset("X-v0", "zoo").config["gamma"] == 0.9
        assert TRPOConfig.from_preset("X-v0", source="zoo").gamma == 0.9
        assert main(["presets"]) == 0  # one row per env id: the default
        rows = [line for line in capsys.readouterr().out.splitlines() if "X-v0" in line]
        assert len(rows) == 2 and rows[0].endswith("b.yaml")
        assert rows[1].startswith("tuned here: X-v0")
        assert main(["presets", "X-v0", "--preset", "zoo"]) == 0
        assert capsys.readouterr().out.startswith("# preset X-v0 from rl/presets/a.yaml")
        # an env id once among RL Zoo's files and once among ours, never twice in either
        files["c.yaml"] = ours
        rl.presets.all_presets.cache_clear()
        with pytest.raises(PresetFileError, match=r"'X-v0' is defined in both b\.yaml and c\.yaml"):
            all_presets()
    finally:
        rl.presets.all_presets.cache_clear()
