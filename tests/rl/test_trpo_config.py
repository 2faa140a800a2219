"""TRPOConfig: validation errors name the field and the value; files and overrides load."""

from __future__ import annotations

import json

import pydantic
import pytest

from rl import TRPOConfig
from rl.config import ConfigError, parse_overrides


def test_defaults_are_the_seed_projects():
    config = TRPOConfig(env_id="Pendulum-v1", total_steps=100_000, seed=0)
    assert (config.max_kl, config.gamma, config.lam) == (0.01, 0.99, 0.95)
    assert (config.cg_iters, config.backtrack_iters, config.damping) == (10, 10, 0.1)
    assert config.policy.hidden_sizes == (64, 64) and config.value.hidden_sizes == (64, 64)
    assert config.steps_per_env == config.steps_per_iteration // config.num_envs


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"max_kl": -1.0}, "max_kl = -1.0: Input should be greater than or equal to 0.000001"),
        ({"gamma": 1.5}, "gamma = 1.5: Input should be less than or equal to 1"),
        ({"num_envs": 0}, "num_envs = 0: Input should be greater than or equal to 1"),
        ({"vector_mode": "threads"}, "vector_mode = 'threads': Input should be 'sync' or 'async'"),
        ({"backtrack_coeff": 1.0}, "backtrack_coeff = 1.0: Input should be less than 1"),
        ({"policy": {"activation": "sigmoid"}}, "policy.activation = 'sigmoid': Input should be"),
        ({"policy": {"hidden_sizes": [64, 0]}}, "policy.hidden_sizes.1 = 0"),
        ({"value": {"epochs": 0}}, "value.epochs = 0: Input should be greater than or equal to 1"),
        ({"device": "tpu9"}, "device = 'tpu9': unknown device 'tpu9' (allowed: 'cpu'"),
        (
            {"steps_per_iteration": 1000, "num_envs": 3},
            "steps_per_iteration = 1000 must be a multiple of num_envs = 3",
        ),
    ],
)
def test_invalid_values_name_the_field_the_value_and_the_rule(fields, expected):
    with pytest.raises(ConfigError) as error:
        TRPOConfig.from_dict({"env_id": "CartPole-v1", **fields})
    message = str(error.value)
    assert expected in message
    assert "\n" not in message


def test_unknown_fields_are_refused_with_the_allowed_names():
    with pytest.raises(
        ConfigError,
        match=r"unknown config field 'max_kll': did you mean 'max_kl'\? \(allowed: .*max_kl",
    ):
        TRPOConfig.from_dict({"max_kll": 0.1})
    with pytest.raises(ConfigError, match=r"unknown config field 'policy.width'.*hidden_sizes"):
        TRPOConfig.from_dict({"policy": {"width": 3}})


def test_direct_construction_raises_pydantic_validation_error():
    with pytest.raises(pydantic.ValidationError, match="max_kl"):
        TRPOConfig(max_kl=0.0)


def test_config_is_frozen():
    config = TRPOConfig()
    with pytest.raises(pydantic.ValidationError):
        config.max_kl = 0.5


def test_every_field_documents_itself():
    for model in (TRPOConfig, TRPOConfig.model_fields["policy"].annotation):
        for name, field in model.model_fields.items():
            assert field.description, name


def test_overrides_use_dotted_keys_and_typed_values():
    config = TRPOConfig(env_id="CartPole-v1").with_overrides(
        [
            "policy.hidden_sizes=[32, 16]",
            "max_kl=2e-2",
            "normalize_observations=true",
            "env_kwargs.render_mode=rgb_array",
            "value.learning_rate=1e-4",
        ]
    )
    assert config.policy.hidden_sizes == (32, 16)
    assert config.max_kl == 0.02
    assert config.normalize_observations is True
    assert config.env_kwargs == {"render_mode": "rgb_array"}
    assert config.value.learning_rate == 1e-4
    assert config.value.epochs == 10  # untouched siblings keep their values


@pytest.mark.parametrize("override", ["max_kl", "=3", "policy..x=1"])
def test_malformed_overrides_are_refused(override):
    with pytest.raises(ConfigError, match="must look like key=value"):
        parse_overrides([override])


def test_yaml_toml_and_json_files_give_the_same_config(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "env_id: Pendulum-v1\ngamma: 0.9\npolicy:\n  hidden_sizes: [32, 32]\n"
    )
    (tmp_path / "c.toml").write_text(
        'env_id = "Pendulum-v1"\ngamma = 0.9\n[policy]\nhidden_sizes = [32, 32]\n'
    )
    (tmp_path / "c.json").write_text(
        json.dumps({"env_id": "Pendulum-v1", "gamma": 0.9, "policy": {"hidden_sizes": [32, 32]}})
    )
    configs = [TRPOConfig.from_file(tmp_path / name) for name in ("c.yaml", "c.toml", "c.json")]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0].gamma == 0.9 and configs[0].policy.hidden_sizes == (32, 32)
    assert TRPOConfig.from_file(tmp_path / "c.yaml", ["seed=7"]).seed == 7


def test_resolved_yaml_round_trips(tmp_path):
    config = TRPOConfig.from_preset("HalfCheetah-v5", seed=3, policy={"log_std_init": -0.5})
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    assert TRPOConfig.from_file(tmp_path / "config.yaml") == config


def test_bad_files_are_reported_in_one_line(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "c.ini").write_text("")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        TRPOConfig.from_file(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="is not valid"):
        TRPOConfig.from_file(tmp_path / "broken.json")
    with pytest.raises(ConfigError, match=r"unknown suffix '\.ini'"):
        TRPOConfig.from_file(tmp_path / "c.ini")
    with pytest.raises(ConfigError, match="cannot read config file"):
        TRPOConfig.from_file(tmp_path / "missing.yaml")


# The presets (rl/presets/*.yaml) are tested in test_presets.py.


def test_run_dir_takes_a_path_as_its_string(tmp_path) -> None:
    from pathlib import Path

    config = TRPOConfig(env_id="CartPole-v1", run_dir=tmp_path / "run")
    assert config.run_dir == str(tmp_path / "run") and isinstance(config.run_dir, str)
    file = tmp_path / "config.yaml"
    file.write_text(config.to_yaml())
    assert TRPOConfig.from_file(file).run_dir == config.run_dir
    with pytest.raises(pydantic.ValidationError, match="run_dir"):
        TRPOConfig(env_id="CartPole-v1", run_dir=Path)  # a class, not a path
