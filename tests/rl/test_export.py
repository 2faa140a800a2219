"""`trpo export`: the exported file maps observations to the actions `predict` takes."""

from __future__ import annotations

import importlib.util

import gymnasium as gym
import numpy as np
import pytest
import torch
import toy_envs
from test_atari_images import BlobSideEnv, blob_config

from rl import TRPO, TRPOConfig
from rl.cli import main
from rl.envs import flatten_observations
from rl.export import export_policy

ONNXRUNTIME = importlib.util.find_spec("onnxruntime") is not None
SAMPLES = 100


def trained(env_id: str | None = None, env_fn=None, **settings) -> TRPO:
    config = TRPOConfig(env_id=env_id, total_steps=1024, steps_per_iteration=512, **settings)
    agent = TRPO(config, env_fn=env_fn)
    return agent.learn(progress="none", final_evaluation=False)


def observations(agent: TRPO, seed: int = 0) -> np.ndarray:
    """Observations as the wrappers hand them to the policy (flattened for non-Box spaces)."""
    space = agent.raw_observation_space
    space.seed(seed)
    samples = [space.sample() for _ in range(SAMPLES)]
    if isinstance(space, gym.spaces.Box):
        return np.stack(samples)
    return np.concatenate([flatten_observations(space, s)[0] for s in samples]).astype(np.float32)


def predicted(agent: TRPO, batch: np.ndarray) -> np.ndarray:
    if isinstance(agent.raw_observation_space, gym.spaces.Box):
        return agent.predict(batch, deterministic=True)
    normalizer = agent._current_obs_normalizer()
    return agent._act(batch, normalizer, deterministic=True)


AGENTS = {
    "box-normalized": lambda: trained("Pendulum-v1", normalize_observations=True),
    "discrete": lambda: trained("CartPole-v1"),
    "dict-multidiscrete": lambda: trained(env_fn=toy_envs.MultiDiscreteTargetEnv),
    "image": lambda: TRPO(blob_config(), env_fn=BlobSideEnv).learn(progress="none"),
}


@pytest.fixture(scope="module", params=sorted(AGENTS))
def agent(request) -> TRPO:
    return AGENTS[request.param]()


def test_pt2_program_takes_the_actions_predict_takes(agent: TRPO, tmp_path) -> None:
    path = export_policy(agent, tmp_path / "policy.pt2")
    batch = observations(agent)
    program = torch.export.load(str(path)).module()
    actions = program(torch.as_tensor(batch)).numpy()
    expected = predicted(agent, batch)
    assert actions.shape == expected.shape and actions.dtype.kind == expected.dtype.kind
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not ONNXRUNTIME, reason="onnxruntime is not installed (extra: export)")
def test_onnx_model_takes_the_actions_predict_takes(agent: TRPO, tmp_path) -> None:
    import onnxruntime

    path = export_policy(agent, tmp_path / "policy.onnx")
    batch = observations(agent, seed=1)
    session = onnxruntime.InferenceSession(str(path))
    (actions,) = session.run(None, {"observation": batch})
    expected = predicted(agent, batch)
    assert actions.shape == expected.shape
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-6)
    (one,) = session.run(None, {"observation": batch[:1]})  # any batch size
    np.testing.assert_allclose(one, expected[:1], rtol=1e-5, atol=1e-6)


def test_cli_exports_a_run_and_says_where(tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    code = main(["train", "CartPole-v1", "--total-steps", "512", "--quiet",
                 "--run-dir", str(run_dir), "--set", "steps_per_iteration=512",
                 "--set", "eval_episodes=1"])  # fmt: skip
    assert code == 0
    capsys.readouterr()
    assert main(["export", str(run_dir), "--format", "pt2"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {run_dir / 'policy.pt2'}"
    assert (run_dir / "policy.pt2").stat().st_size > 1000
    assert main(["export", str(tmp_path / "nope")]) == 2


def test_an_unknown_format_is_refused_by_name(tmp_path) -> None:
    agent = trained("CartPole-v1")
    with pytest.raises(ValueError, match=r"Invalid format: 'tflite' \(must be one of"):
        export_policy(agent, tmp_path / "policy.tflite")
