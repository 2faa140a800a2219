"""TRPO on Gymnasium, built on ``trust_region.TrustRegionOptimizer``:
``rl.TRPO(rl.TRPOConfig(env_id="Pendulum-v1")).learn().evaluate()``.

The public names load on first use (PEP 562), so that a process that needs one module
(the value-fit process imports ``rl.value_process``) does not import them all."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import TYPE_CHECKING, Any

_INSTALL_HINT = 'rl needs the "rl" extra: pip install -e ".[rl]"'

for _name in ("gymnasium", "pydantic", "rich", "yaml"):  # found, not imported: it is cheap
    if importlib.util.find_spec(_name) is None:  # pragma: no cover - a subprocess test
        _message = f"{_INSTALL_HINT} ({_name} is not installed)"
        if os.path.basename(sys.argv[0]) == "trpo":  # the console script: one line
            raise SystemExit(f"trpo: {_message}")
        raise ImportError(_message, name=_name)

# gae now (torch only): its module of the same name would otherwise take the attribute
# when another module imports it
from rl.gae import gae  # noqa: E402

if TYPE_CHECKING:
    from rl.agent import TRPOAgent
    from rl.config import TRPOConfig
    from rl.trpo import TRPO

_HOMES = {"TRPO": "rl.trpo", "TRPOAgent": "rl.agent", "TRPOConfig": "rl.config"}
__all__ = ["TRPO", "TRPOAgent", "TRPOConfig", "gae"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'rl' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
