"""Videos of a trained agent with gymnasium's RecordVideo (``trpo eval RUN_DIR --video DIR``).

The agent acts through ``TRPO.predict`` (frozen normalization statistics, deterministic
by default) in one env made like the training envs but with ``render_mode="rgb_array"``;
RecordVideo writes one MP4 per episode. RecordVideo encodes with moviepy, which rl does not
install by itself. Without a display, MuJoCo needs a headless OpenGL backend:
:func:`use_offscreen_rendering` sets ``MUJOCO_GL`` to ``egl`` (or ``osmesa``) when the
library is there and nothing else was chosen; ``trpo eval --video`` calls it first.

Example:
    >>> agent = TRPO.load("runs/pendulum/model.pt")  # doctest: +SKIP
    >>> record_video(agent, "videos", episodes=2)  # doctest: +SKIP
    {'mean_return': ..., 'std_return': ..., 'mean_length': ..., 'videos': [...]}
"""

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
from rl.evaluation import play_episodes

if TYPE_CHECKING:
    from rl.trpo import TRPO

__all__ = ["MOVIEPY_HINT", "OPENGL_HINT", "record_video", "use_offscreen_rendering"]

MOVIEPY_HINT = "recording videos (gymnasium's RecordVideo) needs moviepy: pip install moviepy"
OPENGL_HINT = (
    "MuJoCo cannot render without a display: install EGL or OSMesa (Debian: libegl1 or "
    "libosmesa6) and set MUJOCO_GL=egl or MUJOCO_GL=osmesa before starting"
)
EVAL_SEED_OFFSET = 1_000_000  # as TRPO.evaluate: apart from the training envs' seeds


def use_offscreen_rendering(environ: dict[str, str] | None = None) -> str | None:
    """Choose MuJoCo's headless OpenGL backend when there is no display.

    On Linux with neither ``DISPLAY`` nor ``WAYLAND_DISPLAY`` and no ``MUJOCO_GL`` chosen,
    sets ``MUJOCO_GL`` (and ``PYOPENGL_PLATFORM``) to ``egl`` if libEGL is installed, else to
    ``osmesa`` if libOSMesa is. Must run before the first MuJoCo env is made (MuJoCo reads it
    once, at import).

    Returns:
        str | None: the backend set, or None when nothing was changed.
    """
    environ = os.environ if environ is None else environ
    if (
        not sys.platform.startswith("linux")
        or environ.get("MUJOCO_GL")
        or environ.get("DISPLAY")
        or environ.get("WAYLAND_DISPLAY")
    ):
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
    """Play ``episodes`` episodes and record each as an MP4 in ``video_dir``.

    Args:
        agent (TRPO): a trained agent whose config names its env (``env_id``).
        video_dir (str or Path): created if missing.
        episodes (int, optional): episodes to play and record (default: 1).
        deterministic (bool, optional): act with the policy's mode (default: True).
        seed (int, optional): episode ``k`` resets with ``seed + k``
            (default: ``config.seed + 1_000_000``, as ``TRPO.evaluate``).

    Returns:
        dict: ``mean_return``, ``std_return``, ``mean_length`` (raw env returns) and
        ``videos`` (the MP4 paths written).

    Raises:
        ImportError: naming the package when moviepy is missing.
        ValueError: for an agent built from an env factory (no ``env_id`` to make).
    """
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
