"""The Nature CNN (Mnih et al., 2015) for image observations (a uint8 Box of rank 2, or 3
with channels first or last: the smallest axis). The rollout keeps images as uint8; the
network converts them (float, scaled by 1/255). Policy and value are separate networks (a
shared trunk would let the value fit move the policy outside its KL bound), as OpenAI
Baselines' TRPO (``value_network='copy'``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from rl.config import PolicyConfig, ValueConfig
from rl.networks import mlp
from rl.policies import Policy, make_distribution
from rl.value import ValueNetwork

__all__ = ["NatureCNN", "image_shape", "is_image_space", "make_image_policy", "make_image_value"]


def is_image_space(space: spaces.Space) -> bool:
    """A uint8 Box of rank 2 or 3: what the CNN networks are built for."""
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) in (2, 3)


def image_shape(space: spaces.Box) -> tuple[tuple[int, int, int], bool]:
    """``((C, H, W), channels_last)`` of an image space."""
    if len(space.shape) == 2:
        return (1, *space.shape), False
    channels_last = int(np.argmin(space.shape)) == 2
    height, width, channels = space.shape if channels_last else np.roll(space.shape, -1)
    return (int(channels), int(height), int(width)), channels_last


class NatureCNN(nn.Module):
    """The Nature DQN's conv trunk, ``(B, C·H·W)`` pixels -> ``(B, features)`` (3,136 for
    84×84): convs 32×8×8/4, 64×4×4/2, 64×3×3/1 with ReLU, orthogonal weights (gain √2), zero
    biases, as Baselines and SB3. Frames of at least 36×36; fed uint8 (``observation_dtype``).
    """

    observation_dtype = torch.uint8

    def __init__(self, space: spaces.Box) -> None:
        super().__init__()
        if not is_image_space(space):
            raise ValueError(f"NatureCNN needs a uint8 image Box of rank 2 or 3, got {space}")
        self.image_shape, self.channels_last = image_shape(space)
        channels, height, width = self.image_shape
        if min(height, width) < 36:
            raise ValueError(f"NatureCNN needs frames of at least 36x36, got {space.shape}")
        self.convolutions = nn.Sequential(
            _conv(channels, 32, 8, 4), nn.ReLU(inplace=True), _conv(32, 64, 4, 2),
            nn.ReLU(inplace=True), _conv(64, 64, 3, 1), nn.ReLU(inplace=True), nn.Flatten(),
        )  # fmt: skip
        with torch.no_grad():
            self.features = int(self.convolutions(torch.zeros(1, *self.image_shape)).shape[1])

    def forward(self, observations: Tensor) -> Tensor:
        """``observations``: ``(B, C·H·W)`` uint8 (or float in [0, 255]) in the space's layout."""
        channels, height, width = self.image_shape
        layout = (height, width, channels) if self.channels_last else self.image_shape
        images = observations.reshape(-1, *layout)
        if self.channels_last:
            images = images.permute(0, 3, 1, 2)
        # scaled in place (a batch of float frames is large: 8,192 x 4 x 84 x 84 x 4 bytes =
        # 925 MB) in a copy (float observations stay as they are); the ReLUs are in place
        # for the same reason
        return self.convolutions(images.to(torch.float32, copy=True).mul_(1.0 / 255.0))


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Conv2d:
    layer = nn.Conv2d(in_channels, out_channels, kernel, stride)
    nn.init.orthogonal_(layer.weight, gain=math.sqrt(2.0))
    nn.init.zeros_(layer.bias)
    return layer


class _ImageNetwork(nn.Sequential):
    """A NatureCNN trunk and an MLP head; exposes the trunk's ``observation_dtype``."""

    observation_dtype = NatureCNN.observation_dtype


def make_image_policy(
    observation_space: spaces.Box,
    action_space: spaces.Space,
    config: PolicyConfig,
    normalize_observations: bool = False,
) -> Policy:
    """Nature CNN trunk + MLP head (output gain 0.01); ValueError with normalization."""
    if normalize_observations:
        raise ValueError(
            "normalize_observations = True with image observations: the CNN scales raw "
            "uint8 pixels by 1/255 itself; set normalize_observations=false"
        )
    distribution = make_distribution(action_space, config.log_std_init)
    trunk = NatureCNN(observation_space)
    sizes = (trunk.features, config.hidden_sizes, distribution.param_size)
    head = mlp(*sizes, config.activation, config.ortho_init, output_gain=0.01)
    return Policy(_ImageNetwork(trunk, head), distribution)


def make_image_value(observation_space: spaces.Box, config: ValueConfig) -> ValueNetwork:
    """Nature CNN trunk + MLP head (``config.hidden_sizes``, one output, gain 1)."""
    trunk = NatureCNN(observation_space)
    head = mlp(trunk.features, config.hidden_sizes, 1, config.activation, True, 1.0)
    return ValueNetwork(_ImageNetwork(trunk, head))
