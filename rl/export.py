"""Export a trained policy as one file, ONNX or a ``torch.export`` program (pt2): the
deterministic policy with the observation normalization folded in (README: Export)."""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn

from rl.policies import Bernoulli, Categorical, DiagGaussian, MultiCategorical

if TYPE_CHECKING:
    from rl.trpo import TRPO

__all__ = ["EXPORT_FORMATS", "ExportedPolicy", "export_input_example", "export_policy"]

ExportFormat = Literal["onnx", "pt2"]
EXPORT_FORMATS: tuple[str, ...] = ("onnx", "pt2")
ONNX_HINT = 'exporting to ONNX needs onnx and onnxscript: pip install -e ".[export]"'


class ExportedPolicy(nn.Module):
    """``observations (B, *shape) -> env actions``, deterministic: a CPU copy of ``agent``'s
    policy with the observation statistics frozen now."""

    def __init__(self, agent: TRPO) -> None:
        super().__init__()
        self.network = copy.deepcopy(agent.policy.network).cpu().eval()
        self.distribution = copy.deepcopy(agent.policy.distribution).cpu().eval()
        self.requires_grad_(False)  # an inference graph: outputs need no autograd
        self.action_space = agent.action_space
        normalizer = agent._current_obs_normalizer()
        self.normalize = normalizer is not None
        if normalizer is not None:  # in the statistics' dtype (float64), as predict does
            scale = np.sqrt(normalizer.var + normalizer.epsilon)
            self.register_buffer("obs_mean", torch.as_tensor(normalizer.mean))
            self.register_buffer("obs_scale", torch.as_tensor(scale))

    def forward(self, observations: Tensor) -> Tensor:
        flat = observations.reshape(observations.shape[0], -1)
        if self.normalize:
            flat = (flat.to(torch.float64) - self.obs_mean) / self.obs_scale
        net_out = self.network(flat.to(torch.float32))
        return self._to_env(net_out)

    def _to_env(self, net_out: Tensor) -> Tensor:
        """The mode of the action distribution, as the env takes it (see each ``to_env``)."""
        distribution, space = self.distribution, self.action_space
        batch = net_out.shape[0]
        if isinstance(distribution, DiagGaussian):
            assert isinstance(space, spaces.Box)
            actions = net_out
            if distribution._bounded:
                low = torch.as_tensor(distribution._low.reshape(-1), dtype=actions.dtype)
                high = torch.as_tensor(distribution._high.reshape(-1), dtype=actions.dtype)
                actions = torch.minimum(torch.maximum(actions, low), high)
            return actions.reshape(batch, *space.shape)
        if isinstance(distribution, Categorical):
            assert isinstance(space, spaces.Discrete)
            return net_out.argmax(-1) + int(space.start)
        if isinstance(distribution, MultiCategorical):
            assert isinstance(space, spaces.MultiDiscrete)
            grid = distribution._grid(net_out) + distribution._logit_mask
            start = torch.as_tensor(np.asarray(space.start).reshape(-1), dtype=torch.int64)
            return (grid.argmax(-1) + start).reshape(batch, *space.shape)
        if isinstance(distribution, Bernoulli):
            return (net_out > 0).to(torch.int8).reshape(batch, *space.shape)
        raise ValueError(f"cannot export a policy over {space}")  # pragma: no cover


def export_input_example(agent: TRPO, batch: int = 2) -> Tensor:
    """A zero batch of observations in the form the exported policy takes."""
    space = agent.raw_observation_space
    if isinstance(space, spaces.Box):
        dtype = torch.uint8 if space.dtype == np.uint8 else torch.float32
        return torch.zeros((batch, *space.shape), dtype=dtype)
    return torch.zeros((batch, spaces.flatdim(space)), dtype=torch.float32)


def export_policy(agent: TRPO, path: str | Path, format: ExportFormat | None = None) -> Path:
    """Write ``agent``'s deterministic policy to ``path`` as "onnx" or "pt2" (default: from
    the suffix); one input, ``observation``, batch size free. ValueError for an unknown
    format; ImportError for ONNX without onnx/onnxscript."""
    path = Path(path)
    format = format or path.suffix.lstrip(".")  # type: ignore[assignment]
    if format not in EXPORT_FORMATS:
        raise ValueError(f"Invalid format: {format!r} (must be one of {EXPORT_FORMATS})")
    module = ExportedPolicy(agent).eval()
    example = export_input_example(agent)
    batch = torch.export.Dim("batch", min=1)
    dynamic = {"observations": {0: batch}}
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "pt2":
        program = torch.export.export(module, (example,), dynamic_shapes=dynamic)
        torch.export.save(program, str(path))
        return path
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ImportError(ONNX_HINT, name=error.name) from None
    with warnings.catch_warnings(), _quiet_logger("torch.onnx"):
        warnings.simplefilter("ignore")  # torch's own notes on its exporter's internals
        torch.onnx.export(
            module, (example,), str(path), input_names=["observation"],
            output_names=["action"], dynamic_shapes=dynamic, dynamo=True, external_data=False,
            verbose=False,
        )  # fmt: skip
    return path


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
