"""Image observations: Nature CNN, uint8 rollout storage, and gymnasium's Atari wrappers."""

from __future__ import annotations

import importlib.util
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import rl
from rl.atari import AtariConfig, is_atari, make_atari_env
from rl.cnn import NatureCNN, image_shape, is_image_space
from rl.envs import make_env_factory, make_vector_envs
from rl.rollout import RolloutCollector

needs_atari = pytest.mark.skipif(
    importlib.util.find_spec("ale_py") is None or importlib.util.find_spec("cv2") is None,
    reason="needs ale-py and opencv (gymnasium's AtariPreprocessing)",
)


class BlobSideEnv(gym.Env):
    """A 36×36 gray frame (uint8, channels first) with a bright 8×8 blob in its left or right
    half; action 1 = "right". Reward 1 when the action names the blob's side, so a policy that
    reads the image earns 8 per 8-step episode (truncated) and a blind one 4."""

    observation_space = spaces.Box(0, 255, (1, 36, 36), np.uint8)
    action_space = spaces.Discrete(2)
    horizon = 8

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self._draw(), {}

    def _draw(self) -> np.ndarray:
        self.side = int(self.np_random.integers(2))
        frame = self.np_random.integers(0, 40, (1, 36, 36), dtype=np.uint8)
        row, col = int(self.np_random.integers(0, 28)), int(self.np_random.integers(0, 10))
        frame[0, row : row + 8, col + 18 * self.side : col + 18 * self.side + 8] = 255
        return frame

    def step(self, action):
        reward = float(int(action) == self.side)
        self.t += 1
        return self._draw(), reward, False, self.t >= self.horizon, {}


def blob_config(**overrides: Any) -> rl.TRPOConfig:
    settings = dict(
        env_id="blob",
        num_envs=2,
        steps_per_iteration=256,
        total_steps=256 * 3,
        max_kl=0.05,
        policy={"hidden_sizes": (32,), "activation": "relu"},
        value={"hidden_sizes": (32,), "activation": "relu", "epochs": 1},
    )
    return rl.TRPOConfig.from_dict({**settings, **overrides})


def test_image_spaces_and_their_layout():
    assert is_image_space(spaces.Box(0, 255, (4, 84, 84), np.uint8))
    assert is_image_space(spaces.Box(0, 255, (84, 84), np.uint8))
    assert not is_image_space(spaces.Box(0, 1, (4, 84, 84), np.float32))
    assert not is_image_space(spaces.Box(0, 255, (84,), np.uint8))
    assert image_shape(spaces.Box(0, 255, (4, 84, 84), np.uint8)) == ((4, 84, 84), False)
    assert image_shape(spaces.Box(0, 255, (210, 160, 3), np.uint8)) == ((3, 210, 160), True)
    assert image_shape(spaces.Box(0, 255, (84, 84), np.uint8)) == ((1, 84, 84), False)


def test_nature_cnn_scales_pixels_by_1_over_255_inside_the_network():
    torch.manual_seed(0)
    cnn = NatureCNN(spaces.Box(0, 255, (4, 84, 84), np.uint8))
    assert cnn.features == 3136 and cnn.observation_dtype == torch.uint8
    pixels = torch.randint(0, 256, (3, 4 * 84 * 84), dtype=torch.uint8)
    expected = cnn.convolutions(pixels.view(3, 4, 84, 84).float() / 255)
    torch.testing.assert_close(cnn(pixels), expected)
    floats = pixels.float()
    torch.testing.assert_close(cnn(floats), expected)  # float pixels in [0, 255] too
    assert torch.equal(floats, pixels.float())  # scaled in a copy, not in the caller's tensor


def test_channels_last_images_are_transposed_not_reinterpreted():
    torch.manual_seed(0)
    last = NatureCNN(spaces.Box(0, 255, (40, 40, 3), np.uint8))
    first = NatureCNN(spaces.Box(0, 255, (3, 40, 40), np.uint8))
    first.load_state_dict(last.state_dict())
    images = torch.randint(0, 256, (2, 40, 40, 3), dtype=torch.uint8)
    torch.testing.assert_close(
        last(images.flatten(1)), first(images.permute(0, 3, 1, 2).flatten(1))
    )


def test_too_small_frames_are_refused():
    with pytest.raises(ValueError, match="at least 36x36"):
        NatureCNN(spaces.Box(0, 255, (1, 20, 20), np.uint8))


def test_image_envs_get_separate_cnn_policy_and_value():
    agent = rl.TRPO(blob_config(), env_fn=BlobSideEnv)
    assert isinstance(agent.policy.network[0], NatureCNN)
    assert isinstance(agent.value.network[0], NatureCNN)
    assert agent.policy.network[0] is not agent.value.network[0]
    policy_ids = {id(p) for p in agent.policy.parameters()}
    assert policy_ids.isdisjoint(id(p) for p in agent.value.parameters())


def test_rollout_buffer_stores_image_observations_as_uint8():
    agent = rl.TRPO(blob_config(), env_fn=BlobSideEnv)
    envs = make_vector_envs(make_env_factory(None, env_fn=BlobSideEnv), 2)
    collector = RolloutCollector(envs, agent.policy, 16)
    collector.reset(seed=0)
    rollout = collector.collect()
    envs.close()
    assert rollout.observations.dtype == torch.uint8
    assert rollout.observations.shape == (17, 2, 36 * 36)
    assert int(rollout.observations.max()) == 255  # the blob, unscaled


def test_vector_observation_envs_keep_float32_storage():
    config = rl.TRPOConfig(env_id="CartPole-v1", num_envs=2, steps_per_iteration=8)
    agent = rl.TRPO(config)
    envs = make_vector_envs(make_env_factory("CartPole-v1"), 2)
    collector = RolloutCollector(envs, agent.policy, 4)
    assert collector.collect().observations.dtype == torch.float32
    envs.close()


def test_trains_a_few_iterations_on_a_small_image_env():
    rows: list[dict[str, Any]] = []
    agent = rl.TRPO(blob_config(), env_fn=BlobSideEnv)
    agent.learn(progress="none", callback=lambda _, row: rows.append(row) and None)
    assert [row["step"] for row in rows] == [256, 512, 768]
    assert all(row["accepted"] and 0 < row["kl"] <= 0.05 * (1 + 1e-6) for row in rows)
    assert rows[-1]["entropy"] < rows[0]["entropy"]  # the policy commits to what it sees
    assert rows[-1]["episode_return_mean"] > rows[0]["episode_return_mean"]
    assert agent.evaluate(episodes=4)["mean_return"] > 6.0  # blind policies earn 4
    action = agent.predict(BlobSideEnv().reset(seed=3)[0])  # a raw (1, 36, 36) frame
    assert action in (0, 1)


def test_normalizing_image_observations_is_refused():
    with pytest.raises(ValueError, match="normalize_observations = True with image"):
        rl.TRPO(blob_config(normalize_observations=True), env_fn=BlobSideEnv)


def test_atari_config_is_validated():
    with pytest.raises(rl.config.ConfigError, match=r"atari\.frame_stack = 0"):
        rl.TRPOConfig.from_dict({"atari": {"frame_stack": 0}})
    with pytest.raises(rl.config.ConfigError, match=r"unknown config field 'atari\.grayscale'"):
        rl.TRPOConfig.from_dict({"atari": {"grayscale": False}})


@needs_atari
def test_ale_ids_get_gymnasiums_atari_preprocessing_and_frame_stack():
    assert is_atari("ALE/Pong-v5") and not is_atari("CartPole-v1")
    factory = make_env_factory("ALE/Pong-v5", {}, atari=AtariConfig(frame_stack=3))
    env = factory()
    wrappers = []
    inner = env
    while isinstance(inner, gym.Wrapper):
        wrappers.append(type(inner).__name__)
        inner = inner.env
    assert {"AtariPreprocessing", "FrameStackObservation"} <= set(wrappers)
    assert inner.unwrapped._frameskip == 1  # v5's own frame skip is off: the wrapper skips
    assert env.observation_space == spaces.Box(0, 255, (3 * 84 * 84,), np.uint8)
    observation, _ = env.reset(seed=0)
    assert observation.dtype == np.uint8 and observation.shape == (3 * 84 * 84,)
    env.close()


@needs_atari
def test_frameskip_in_env_kwargs_is_refused_with_the_field_to_use():
    with pytest.raises(ValueError, match=r"env_kwargs\.frameskip = 4.*set atari\.frame_skip"):
        make_atari_env("ALE/Pong-v5", {"frameskip": 4}, AtariConfig())


@needs_atari
def test_pong_agent_uses_the_cnn_on_uint8_frames():
    config = rl.TRPOConfig.from_preset("ALE/Pong-v5", num_envs=1, steps_per_iteration=8)
    agent = rl.TRPO(config)
    assert agent.raw_observation_space.shape == (4, 84, 84)
    assert isinstance(agent.policy.network[0], NatureCNN)
    assert agent.policy.distribution.param_size == 6  # Pong's minimal action set
    agent.close()
