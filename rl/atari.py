"""Atari (ALE) environments: gymnasium's own preprocessing wrappers, configured as data.

An ALE env id (``ALE/Pong-v5``, or any id with ale-py's entry point) is made as::

    gym.make(env_id, frameskip=1, **env_kwargs)       ALE v5 skips 4 frames itself: off here
    AtariPreprocessing(noop_max, frame_skip,          frame skip with max-pooling of the last
                       screen_size, grayscale)         two frames, no-op starts, 84x84 gray
    FrameStackObservation(frame_stack)                (frame_stack, 84, 84) uint8

Observations stay uint8 (the CNN scales them); ALE v5's sticky actions are kept; rewards are
not clipped and a lost life ends no episode (unless ``terminal_on_life_loss``).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import gymnasium as gym
from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AtariConfig", "ensure_registered", "is_atari", "make_atari_env", "make_gym_env"]

_ALE_HINT = 'pip install "gymnasium[atari]"'
_OPENCV_HINT = "pip install opencv-python-headless"


class AtariConfig(BaseModel):
    """Preprocessing of ALE (Atari) envs; ignored for every other env."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    frame_skip: int = Field(
        4, ge=1, le=32, description="Frames per agent step (max-pooled over the last two)."
    )
    frame_stack: int = Field(4, ge=1, le=64, description="Most recent frames stacked per obs.")
    screen_size: int = Field(84, ge=36, le=1024, description="Side of the square gray frame.")
    noop_max: int = Field(30, ge=0, le=1000, description="Most no-op actions after a reset.")
    terminal_on_life_loss: bool = Field(
        False, description="End the episode when a life is lost (returns are then per life)."
    )


def ensure_registered(env_id: str) -> None:
    """Register ale-py's envs for an unknown ``env_id`` (DependencyNotInstalled for ALE/)."""
    if env_id in gym.registry:
        return
    if importlib.util.find_spec("ale_py") is None:
        if env_id.startswith("ALE/"):
            raise gym.error.DependencyNotInstalled(f"{env_id} needs ale-py: {_ALE_HINT}")
        return
    gym.register_envs(importlib.import_module("ale_py"))


def is_atari(env_id: str | None) -> bool:
    """Whether ``env_id`` is an ALE env (its registered entry point is ale-py's)."""
    if env_id is None:
        return False
    ensure_registered(env_id)
    spec = gym.registry.get(env_id)
    return spec is not None and "ale_py" in str(spec.entry_point)


def make_atari_env(env_id: str, env_kwargs: dict[str, Any] | None, config: AtariConfig) -> gym.Env:
    """An ALE env wrapped as the module docstring shows; ``(stack, S, S)`` uint8."""
    kwargs = dict(env_kwargs or {})
    frameskip = kwargs.pop("frameskip", 1)
    if frameskip != 1:
        raise ValueError(
            f"env_kwargs.frameskip = {frameskip!r}: ALE envs are made with frameskip=1 and "
            "AtariPreprocessing skips frames; set atari.frame_skip instead"
        )
    if importlib.util.find_spec("cv2") is None:
        raise gym.error.DependencyNotInstalled(
            f"Atari preprocessing (gymnasium's AtariPreprocessing) needs OpenCV: {_OPENCV_HINT}"
        )
    env = gym.make(env_id, frameskip=1, **kwargs)
    env = AtariPreprocessing(
        env, noop_max=config.noop_max, frame_skip=config.frame_skip,
        screen_size=config.screen_size, terminal_on_life_loss=config.terminal_on_life_loss,
        grayscale_obs=True, scale_obs=False,
    )  # fmt: skip
    if config.frame_stack > 1:
        env = FrameStackObservation(env, stack_size=config.frame_stack)
    return env


def make_gym_env(
    env_id: str, env_kwargs: dict[str, Any] | None = None, atari: AtariConfig | None = None
) -> gym.Env:
    """``gym.make(env_id, **env_kwargs)``, with the Atari preprocessing for ALE ids."""
    if is_atari(env_id):
        return make_atari_env(env_id, env_kwargs, atari if atari is not None else AtariConfig())
    return gym.make(env_id, **(env_kwargs or {}))
