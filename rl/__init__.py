"""TRPO on Gymnasium, built on ``trust_region.TrustRegionOptimizer``:
``rl.TRPO(rl.TRPOConfig(env_id="Pendulum-v1")).learn().evaluate()``."""

from __future__ import annotations

import os
import sys

_INSTALL_HINT = 'rl needs the "rl" extra: pip install -e ".[rl]"'

try:
    import gymnasium  # noqa: F401
    import pydantic
    import rich  # noqa: F401
    import yaml  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised in a subprocess test
    message = f"{_INSTALL_HINT} ({error.name} is not installed)"
    if os.path.basename(sys.argv[0]) == "trpo":  # the console script: one line, no traceback
        raise SystemExit(f"trpo: {message}") from None
    raise ImportError(message, name=error.name) from error
if int(pydantic.VERSION.split(".")[0]) < 2:  # pragma: no cover
    raise ImportError(f"{_INSTALL_HINT} (pydantic >= 2 is required, found {pydantic.VERSION})")

# The dependency check above must run first.
from rl.agent import TRPOAgent  # noqa: E402
from rl.config import TRPOConfig  # noqa: E402
from rl.gae import gae  # noqa: E402
from rl.trpo import TRPO  # noqa: E402

__all__ = ["TRPO", "TRPOAgent", "TRPOConfig", "gae"]
