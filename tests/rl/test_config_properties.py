"""Property tests: invalid configs are refused before any env starts, naming field and value."""

from __future__ import annotations

import math
import re
from pathlib import Path

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rl.cli
from rl.config import ConfigError, TRPOConfig

# (field, a strategy of values outside its allowed range)
OUT_OF_RANGE = {
    "max_kl": st.one_of(st.floats(max_value=0.0), st.floats(min_value=10.001, max_value=1e9)),
    "damping": st.floats(max_value=-1e-9, min_value=-1e9),
    "cg_iters": st.one_of(st.integers(max_value=0), st.integers(min_value=1001)),
    "backtrack_iters": st.one_of(st.integers(max_value=-1), st.integers(min_value=101)),
    "backtrack_coeff": st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0)),
    "gamma": st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.000001)),
    "lam": st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.000001)),
    "num_envs": st.one_of(st.integers(max_value=0), st.integers(min_value=1025)),
    "total_steps": st.integers(max_value=0),
    "seed": st.one_of(st.integers(max_value=-1), st.integers(min_value=2**31)),
    "fvp_subsample": st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.000001)),
    "eval_every": st.integers(max_value=-1),
}
WRONG_TYPE = st.one_of(
    st.text(alphabet="abcxyz", min_size=1, max_size=6),
    st.lists(st.integers(), min_size=1, max_size=3),
    st.dictionaries(st.text(alphabet="ab", min_size=1, max_size=2), st.integers(), min_size=1),
)
FAST = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def assert_names(message: str, field: str, value: object) -> None:
    assert "\n" not in message
    assert field in message, message
    if isinstance(value, float) and math.isnan(value):
        assert "nan" in message.lower(), message
    elif isinstance(value, (int, float)):
        assert repr(value) in message or str(value) in message, message


@FAST
@given(data=st.data(), field=st.sampled_from(sorted(OUT_OF_RANGE)))
def test_out_of_range_values_name_the_field_and_value(data, field: str) -> None:
    value = data.draw(OUT_OF_RANGE[field])
    with pytest.raises(ConfigError) as error:
        TRPOConfig.from_dict({"env_id": "CartPole-v1", field: value})
    assert_names(str(error.value), field, value)


@FAST
@given(field=st.sampled_from(sorted(OUT_OF_RANGE)), value=WRONG_TYPE)
def test_wrong_types_are_refused(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as error:
        TRPOConfig.from_dict({"env_id": "CartPole-v1", field: value})
    assert field in str(error.value)


@FAST
@given(key=st.from_regex(r"[a-z][a-z_]{2,12}", fullmatch=True))
def test_unknown_keys_are_refused(key: str) -> None:
    if key in TRPOConfig.model_fields:
        return
    with pytest.raises(ConfigError, match=rf"unknown config field '{re.escape(key)}'"):
        TRPOConfig.from_dict({"env_id": "CartPole-v1", key: 1})


@pytest.fixture
def no_env_may_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("an env was started for an invalid config")

    monkeypatch.setattr(gym, "make", forbidden)
    monkeypatch.setattr(gym, "make_vec", forbidden)
    monkeypatch.setattr(rl.cli, "TRPO", forbidden)


@FAST
@given(data=st.data(), field=st.sampled_from(sorted(OUT_OF_RANGE)))
def test_cli_exits_2_before_any_env_starts(data, field, no_env_may_start, capsys) -> None:
    value = data.draw(OUT_OF_RANGE[field])
    if isinstance(value, float) and not math.isfinite(value):
        return  # not expressible as a --set literal
    code = rl.cli.main(["train", "CartPole-v1", "--set", f"{field}={value!r}", "--quiet"])
    assert code == 2
    message = capsys.readouterr().err.strip()
    assert message.count("\n") == 0 and "Traceback" not in message
    assert field in message


@FAST
@given(name=st.from_regex(r"[A-Z][a-zA-Z]{2,10}-v[0-9]", fullmatch=True))
def test_cli_refuses_unknown_env_ids(name, no_env_may_start, capsys) -> None:
    if name in gym.registry:
        return
    assert rl.cli.main(["train", name, "--quiet"]) == 2
    message = capsys.readouterr().err
    assert "env_id" in message and name in message


def test_yaml_tags_that_construct_objects_are_refused_and_not_run(
    tmp_path: Path, no_env_may_start, capsys
) -> None:
    marker = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(
        f'env_id: CartPole-v1\nmax_kl: !!python/object/apply:os.system ["touch {marker}"]\n'
    )
    assert rl.cli.main(["train", str(config), "--quiet"]) == 2
    assert not marker.exists()
    assert str(config) in capsys.readouterr().err


def test_standard_yaml_tags_are_fine(tmp_path: Path) -> None:
    config = tmp_path / "ok.yaml"
    config.write_text("env_id: CartPole-v1\nmax_kl: !!float 0.02\n")
    assert TRPOConfig.from_file(config).max_kl == 0.02


@pytest.mark.parametrize(
    ("name", "text"),
    [("broken.yaml", "env_id: [CartPole-v1\n"), ("broken.json", "{'env_id':"),
     ("broken.toml", "env_id = \n")],
)  # fmt: skip
def test_unparseable_config_files_exit_2_naming_the_file(
    tmp_path: Path, name: str, text: str, no_env_may_start, capsys
) -> None:
    config = tmp_path / name
    config.write_text(text)
    assert rl.cli.main(["train", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and err.count("\n") == 1
