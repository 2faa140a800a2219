"""Videos of a trained agent with gymnasium's RecordVideo (``trpo eval RUN_DIR --video DIR``):
``TRPO.predict`` in one env made like the training envs with ``render_mode="rgb_array"``,
one MP4 per episode (encoded by moviepy, not installed by rl)."""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gymnasium.wrappers import RecordVideo

from rl.atari import make_gym_env
from rl.envs import quiet_mujoco_deprecations
from rl.evaluation import EVAL_SEED_OFFSET, play_episodes

if TYPE_CHECKING:
    from rl.trpo import TRPO

__all__ = ["MOVIEPY_HINT", "OPENGL_HINT", "record_video", "use_offscreen_rendering"]

MOVIEPY_HINT = "recording videos (gymnasium's RecordVideo) needs moviepy: pip install moviepy"
OPENGL_HINT = (
    "MuJoCo cannot render without a display: install EGL or OSMesa (Debian: libegl1 or "
    "libosmesa6) and set MUJOCO_GL=egl or MUJOCO_GL=osmesa before starting"
)


def use_offscreen_rendering(environ: dict[str, str] | None = None) -> str | None:
    """On Linux without a display or a chosen ``MUJOCO_GL``, set it (and
    ``PYOPENGL_PLATFORM``) to "egl" or else "osmesa" where the library is; returns the
    backend set, or None. Must run before the first MuJoCo env is made."""
    environ = os.environ if environ is None else environ
    chosen = ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY")
    if not sys.platform.startswith("linux") or any(environ.get(name) for name in chosen):
        return None
    for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(library):
            environ["MUJOCO_GL"] = backend
            environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
    return None


def record_video(
    agent: TRPO,
    video_dir: str | Path,
    episodes: int = 1,
    deterministic: bool = True,
    seed: int | None = None,
) -> dict[str, Any]:
    """Play ``episodes`` (reset with ``seed + k``, default as ``TRPO.evaluate``), each
    recorded as an MP4 in ``video_dir``; ``evaluate``'s figures and ``videos`` (the paths).
    ImportError without moviepy; ValueError for an agent without ``env_id``."""
    if importlib.util.find_spec("moviepy") is None:
        raise ImportError(MOVIEPY_HINT, name="moviepy")
    config = agent.config
    if config.env_id is None:
        raise ValueError("record_video needs config.env_id; wrap your own env in RecordVideo")
    if episodes < 1:
        raise ValueError(f"Invalid episodes: {episodes} (must be >= 1)")
    video_dir = Path(video_dir)
    seed = config.seed + EVAL_SEED_OFFSET if seed is None else seed
    kwargs = {**config.env_kwargs, "render_mode": "rgb_array"}
    with quiet_mujoco_deprecations():
        env = make_gym_env(config.env_id, kwargs, config.atari)
    before = set(video_dir.glob("*.mp4")) if video_dir.is_dir() else set()
    prefix = config.env_id.replace("/", "_")
    env = RecordVideo(env, str(video_dir), episode_trigger=lambda _: True, name_prefix=prefix)
    try:
        played = play_episodes(
            env, lambda o: agent.predict(o, deterministic=deterministic), episodes, seed
        )
    except Exception as error:
        if type(error).__module__.startswith("mujoco") and "OpenGL" in str(error):
            raise RuntimeError(OPENGL_HINT) from error  # mujoco.FatalError: no GL context
        raise
    finally:
        env.close()
    videos = sorted(set(video_dir.glob("*.mp4")) - before)
    return {**played, "videos": [str(path) for path in videos]}
