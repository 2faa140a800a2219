"""Policies: a network whose output parameterises a distribution over one action space.

The distributions here are plain tensor maths on a flat parameter tensor ``(B, P)``, not
``torch.distributions`` objects: the rollout calls ``act`` once per vector step and the
update calls ``log_prob`` / ``kl`` / ``entropy`` on whole batches.

| action space  | distribution                                        | stored action     |
|---------------|-----------------------------------------------------|-------------------|
| Box           | diagonal Gaussian, state-independent log-std        | float32 (B, A)    |
| Discrete      | categorical                                         | int64 (B,)        |
| MultiDiscrete | one categorical per dimension                       | int64 (B, D)      |
| MultiBinary   | one Bernoulli per dimension                         | float32 (B, D)    |

Box actions are clipped to the space's bounds only when sent to the environment
(``to_env``); the unclipped sample is what the policy is trained on.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch
from gymnasium import spaces
from torch import Generator, Tensor, nn
from torch.nn import functional as F

from rl.config import PolicyConfig
from rl.networks import mlp
from trust_region import bernoulli_fisher_vp, categorical_fisher_vp

__all__ = ["ActionDistribution", "Bernoulli", "Categorical", "DiagGaussian", "MultiCategorical",
           "Policy", "make_distribution", "make_policy"]  # fmt: skip

_LOG_2PI = math.log(2.0 * math.pi)
_MASKED_LOGIT = -1e9  # finite, so that 0 * (masked − masked) stays 0 in KL and entropy


class ActionDistribution(nn.Module):
    """Maths of one family of action distributions: ``params(net_out)`` maps the network
    output ``(B, param_size)`` to the parameters that ``log_prob``, ``kl`` and ``entropy``
    take (returning ``(B,)``); ``act`` samples straight from the network output."""

    param_size: int
    action_shape: tuple[int, ...]
    action_dtype: torch.dtype

    def params(self, net_out: Tensor) -> Tensor:
        raise NotImplementedError

    def ggn_outputs(self, net_out: Tensor) -> Tensor:
        """Where the KL's output-space Hessian is taken (logits; ``[mean, log_std]``)."""
        raise NotImplementedError

    def output_fisher_vp(self, outputs: Tensor, tangent: Tensor) -> Tensor:
        """Per-sample Hessian of ``KL(old ‖ new)`` in ``ggn_outputs`` space, times ``tangent``."""
        raise NotImplementedError

    def act(self, net_out: Tensor, deterministic: bool, generator: Generator | None) -> Tensor:
        raise NotImplementedError

    def sampler(self, generator: Generator | None) -> Callable[[Tensor], Tensor]:
        """``net_out -> act(net_out, False, generator)`` for one rollout (may precompute)."""
        return functools.partial(self.act, deterministic=False, generator=generator)

    def log_prob(self, params: Tensor, actions: Tensor) -> Tensor:
        raise NotImplementedError

    def kl(self, old_params: Tensor, new_params: Tensor) -> Tensor:
        """Per-sample ``KL(old ‖ new)``."""
        raise NotImplementedError

    def entropy(self, params: Tensor) -> Tensor:
        raise NotImplementedError

    def to_env(self, actions: Tensor) -> np.ndarray:
        """Batch of stored actions ``(B, *action_shape)`` -> what the vector env accepts."""
        raise NotImplementedError


class DiagGaussian(ActionDistribution):
    """Diagonal Gaussian, learned state-independent log-std; ``params = [mean, log_std]``."""

    # Hessian of KL(old ‖ new) in each log-std at old = new, uncoupled from the mean: so the
    # log_std parameter's Fisher block is 2·I.
    log_std_curvature = 2.0

    def __init__(self, space: spaces.Box, log_std_init: float = 0.0) -> None:
        super().__init__()
        self.action_dim = int(np.prod(space.shape))
        self.param_size = self.action_dim
        self.action_shape = (self.action_dim,)
        self.action_dtype = torch.float32
        self.log_std = nn.Parameter(torch.full((self.action_dim,), float(log_std_init)))
        self._env_shape = space.shape
        self._env_dtype = space.dtype
        low = np.asarray(space.low, dtype=np.float64).reshape(-1)
        high = np.asarray(space.high, dtype=np.float64).reshape(-1)
        self._bounded = bool(np.isfinite(low).any() or np.isfinite(high).any())
        if self._env_dtype == np.float32:
            # Clipping float32 actions to the float32 bounds, then nothing to cast, gives
            # what clipping to float64 bounds and casting gives, one copy fewer per step.
            low, high = low.astype(np.float32), high.astype(np.float32)
        self._low, self._high = low, high

    def params(self, net_out: Tensor) -> Tensor:
        return torch.cat([net_out, self.log_std.expand_as(net_out)], dim=-1)

    def ggn_outputs(self, net_out: Tensor) -> Tensor:
        return self.params(net_out)

    def output_fisher_vp(self, outputs: Tensor, tangent: Tensor) -> Tensor:
        log_std = outputs[..., self.action_dim :]
        tangent_mean, tangent_log_std = tangent.chunk(2, dim=-1)
        return torch.cat([tangent_mean * torch.exp(-2.0 * log_std), 2.0 * tangent_log_std], -1)

    def mean_precision(self) -> Tensor:
        """``exp(−2·log_std)`` (detached): the KL's Hessian in the mean, for every sample."""
        return torch.exp(-2.0 * self.log_std.detach())

    def act(self, net_out: Tensor, deterministic: bool, generator: Generator | None) -> Tensor:
        if deterministic:
            return net_out
        noise = torch.randn(net_out.shape, generator=generator, device=net_out.device)
        return net_out + self.log_std.exp() * noise

    def sampler(self, generator: Generator | None) -> Callable[[Tensor], Tensor]:
        std = self.log_std.detach().exp()  # once per rollout, not once per step

        def sample(net_out: Tensor) -> Tensor:
            noise = torch.randn(net_out.shape, generator=generator, device=net_out.device)
            return net_out + std * noise

        return sample

    def log_prob(self, params: Tensor, actions: Tensor) -> Tensor:
        mean, log_std = params.chunk(2, dim=-1)
        z = (actions - mean) * torch.exp(-log_std)
        return -0.5 * (z * z).sum(-1) - log_std.sum(-1) - 0.5 * self.action_dim * _LOG_2PI

    def kl(self, old_params: Tensor, new_params: Tensor) -> Tensor:
        old_mean, old_log_std = old_params.chunk(2, dim=-1)
        new_mean, new_log_std = new_params.chunk(2, dim=-1)
        old_var = torch.exp(2.0 * old_log_std)
        inv_new_var = torch.exp(-2.0 * new_log_std)
        terms = (
            new_log_std - old_log_std + 0.5 * (old_var + (old_mean - new_mean) ** 2) * inv_new_var
        )
        return terms.sum(-1) - 0.5 * self.action_dim

    def entropy(self, params: Tensor) -> Tensor:
        log_std = params[..., self.action_dim :]
        return log_std.sum(-1) + 0.5 * self.action_dim * (1.0 + _LOG_2PI)

    def to_env(self, actions: Tensor) -> np.ndarray:
        array = actions.detach().numpy() if actions.device.type == "cpu" else actions.cpu().numpy()
        if self._bounded:
            array = np.clip(array, self._low, self._high)
        return array.reshape((-1, *self._env_shape)).astype(self._env_dtype, copy=False)


class Categorical(ActionDistribution):
    """Categorical over ``Discrete(n, start)``; ``params`` are normalised log-probabilities."""

    def __init__(self, space: spaces.Discrete) -> None:
        super().__init__()
        self.param_size = int(space.n)
        self.action_shape = ()
        self.action_dtype = torch.int64
        self._start = int(space.start)

    def params(self, net_out: Tensor) -> Tensor:
        return F.log_softmax(net_out, dim=-1)

    def ggn_outputs(self, net_out: Tensor) -> Tensor:
        return net_out

    def output_fisher_vp(self, outputs: Tensor, tangent: Tensor) -> Tensor:
        return categorical_fisher_vp(outputs, tangent)

    def act(self, net_out: Tensor, deterministic: bool, generator: Generator | None) -> Tensor:
        return _gumbel_argmax(net_out, deterministic, generator)

    def log_prob(self, params: Tensor, actions: Tensor) -> Tensor:
        return params.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def kl(self, old_params: Tensor, new_params: Tensor) -> Tensor:
        return (old_params.exp() * (old_params - new_params)).sum(-1)

    def entropy(self, params: Tensor) -> Tensor:
        return -(params.exp() * params).sum(-1)

    def to_env(self, actions: Tensor) -> np.ndarray:
        array = actions.detach().cpu().numpy()
        return array + self._start if self._start else array


class MultiCategorical(ActionDistribution):
    """Independent categoricals over ``MultiDiscrete(nvec, start)``: ``D × K`` logits
    (``K = max(nvec)``, entries beyond ``nvec[d]`` masked); params: log-probabilities."""

    def __init__(self, space: spaces.MultiDiscrete) -> None:
        super().__init__()
        nvec = np.asarray(space.nvec).reshape(-1)
        self.num_dims = len(nvec)
        self.num_choices = int(nvec.max())
        self.param_size = self.num_dims * self.num_choices
        self.action_shape = (self.num_dims,)
        self.action_dtype = torch.int64
        mask = torch.arange(self.num_choices).unsqueeze(0) >= torch.as_tensor(nvec).unsqueeze(1)
        self.register_buffer("_logit_mask", mask.float() * _MASKED_LOGIT, persistent=False)
        self._start = np.asarray(space.start).reshape(-1)
        self._env_shape = space.shape
        self._env_dtype = space.dtype

    def _grid(self, flat: Tensor) -> Tensor:
        return flat.view(*flat.shape[:-1], self.num_dims, self.num_choices)

    def params(self, net_out: Tensor) -> Tensor:
        logits = self._grid(net_out) + self._logit_mask
        return F.log_softmax(logits, dim=-1).flatten(-2)

    def ggn_outputs(self, net_out: Tensor) -> Tensor:
        return self._grid(net_out) + self._logit_mask

    def act(self, net_out: Tensor, deterministic: bool, generator: Generator | None) -> Tensor:
        return _gumbel_argmax(self._grid(net_out) + self._logit_mask, deterministic, generator)

    def log_prob(self, params: Tensor, actions: Tensor) -> Tensor:
        chosen = self._grid(params).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
        return chosen.sum(-1)

    kl, entropy = Categorical.kl, Categorical.entropy  # log-probabilities, as Categorical's
    output_fisher_vp = Categorical.output_fisher_vp

    def to_env(self, actions: Tensor) -> np.ndarray:
        array = actions.detach().cpu().numpy() + self._start
        return array.reshape((-1, *self._env_shape)).astype(self._env_dtype, copy=False)


class Bernoulli(ActionDistribution):
    """Independent Bernoullis over ``MultiBinary``; ``params`` are the logits ``(B, D)``."""

    def __init__(self, space: spaces.MultiBinary) -> None:
        super().__init__()
        self.param_size = int(np.prod(space.shape))
        self.action_shape = (self.param_size,)
        self.action_dtype = torch.float32
        self._env_shape = space.shape

    def params(self, net_out: Tensor) -> Tensor:
        return net_out

    def ggn_outputs(self, net_out: Tensor) -> Tensor:
        return net_out

    def output_fisher_vp(self, outputs: Tensor, tangent: Tensor) -> Tensor:
        return bernoulli_fisher_vp(outputs, tangent)

    def act(self, net_out: Tensor, deterministic: bool, generator: Generator | None) -> Tensor:
        if deterministic:
            return (net_out > 0).float()
        uniform = torch.rand(net_out.shape, generator=generator, device=net_out.device)
        return (uniform < torch.sigmoid(net_out)).float()

    def log_prob(self, params: Tensor, actions: Tensor) -> Tensor:
        return (actions * F.logsigmoid(params) + (1 - actions) * F.logsigmoid(-params)).sum(-1)

    def kl(self, old_params: Tensor, new_params: Tensor) -> Tensor:
        p_old = torch.sigmoid(old_params)
        log_ratio_one = F.logsigmoid(old_params) - F.logsigmoid(new_params)
        log_ratio_zero = F.logsigmoid(-old_params) - F.logsigmoid(-new_params)
        return (p_old * log_ratio_one + (1 - p_old) * log_ratio_zero).sum(-1)

    def entropy(self, params: Tensor) -> Tensor:
        p = torch.sigmoid(params)
        return -(p * F.logsigmoid(params) + (1 - p) * F.logsigmoid(-params)).sum(-1)

    def to_env(self, actions: Tensor) -> np.ndarray:
        array = actions.detach().cpu().numpy().astype(np.int8)
        return array.reshape((-1, *self._env_shape))


def _gumbel_argmax(logits: Tensor, deterministic: bool, generator: Generator | None) -> Tensor:
    """Sample from softmax(logits) along the last axis: argmax(logits − log E), E ~ Exp(1)."""
    if deterministic:
        return logits.argmax(-1)
    exponential = torch.empty_like(logits).exponential_(generator=generator)
    return (logits - exponential.log()).argmax(-1)


class Policy(nn.Module):
    """A ``network`` from flat observations ``(B, obs_dim)`` to ``(B, param_size)`` (the
    Gaussian mean or the logits) and the action ``distribution`` family.

        >>> space = spaces.Discrete(3)
        >>> policy = Policy(mlp(4, (8,), 3), make_distribution(space))
        >>> policy.act(torch.zeros(5, 4)).shape
        torch.Size([5])
    """

    def __init__(self, network: nn.Module, distribution: ActionDistribution) -> None:
        super().__init__()
        self.network = network
        self.distribution = distribution

    def forward(self, observations: Tensor) -> Tensor:
        """Distribution parameters ``(B, P)`` for a batch of observations."""
        return self.distribution.params(self.network(observations))

    def ggn_outputs(self, observations: Tensor) -> Tensor:
        """What the Gauss-Newton Fisher products differentiate (see ActionDistribution)."""
        return self.distribution.ggn_outputs(self.network(observations))

    @torch.no_grad()
    def act(
        self, observations: Tensor, deterministic: bool = False, generator: Generator | None = None
    ) -> Tensor:
        """Actions ``(B, *action_shape)`` sampled (or the mode when ``deterministic``)."""
        return self.distribution.act(self.network(observations), deterministic, generator)


def make_distribution(space: spaces.Space, log_std_init: float = 0.0) -> ActionDistribution:
    """The distribution family for ``space``; a ValueError naming the space otherwise."""
    if isinstance(space, spaces.Box):
        if not np.issubdtype(space.dtype, np.floating):
            raise ValueError(f"Unsupported action space {space}: Box actions must be floating")
        return DiagGaussian(space, log_std_init)
    if isinstance(space, spaces.Discrete):
        return Categorical(space)
    if isinstance(space, spaces.MultiDiscrete):
        return MultiCategorical(space)
    if isinstance(space, spaces.MultiBinary):
        return Bernoulli(space)
    raise ValueError(
        f"Unsupported action space {space} ({type(space).__name__}): rl supports Box, "
        "Discrete, MultiDiscrete and MultiBinary actions"
    )


def make_policy(obs_dim: int, action_space: spaces.Space, config: PolicyConfig) -> Policy:
    """An MLP policy for ``action_space`` as described by ``config``."""
    distribution = make_distribution(action_space, config.log_std_init)
    sizes = (obs_dim, config.hidden_sizes, distribution.param_size)
    network = mlp(*sizes, config.activation, config.ortho_init, output_gain=0.01)
    return Policy(network, distribution)
