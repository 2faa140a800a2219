"""Rollout collection into preallocated time-major ``(T, N)`` buffers, one policy forward
per vector step. A NEXT_STEP reset slot holds no transition (``valid = False``). Row
``t + 1`` of ``observations`` always follows step ``t`` (final observations included), so
``V(observations[1:])`` gives the bootstrap values ``rl.gae`` needs."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import Tensor

from rl.envs import VectorEnvs
from rl.errors import NonFiniteEnvError
from rl.networks import fast_forward
from rl.policies import Policy
from rl.wrappers import raise_first_non_finite

__all__ = ["FiniteCheck", "Rollout", "RolloutCollector"]


@dataclass(frozen=True)
class Rollout:
    """One iteration of experience: views into the collector's buffers (overwritten by the
    next ``collect()``). ``observations`` ``(T + 1, N, obs_dim)`` float32 (uint8 images);
    ``actions`` as sampled (unclipped); the others ``(T, N)``."""

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor
    valid: Tensor


def _check_buffer_fits(envs: VectorEnvs, policy: Policy, horizon: int) -> None:
    """A MemoryError naming steps_per_iteration if the observations exceed the memory."""
    item = torch.empty((), dtype=_storage_dtype(envs, policy)).element_size()
    needed = (horizon + 1) * envs.num_envs * envs.observation_dim * item
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this platform: let torch decide
        return
    if needed > available:
        raise MemoryError(
            f"steps_per_iteration = {horizon * envs.num_envs} needs {needed / 2**30:.1f} GiB "
            f"for the rollout's observations alone, more than this machine's "
            f"{available / 2**30:.1f} GiB: choose fewer steps per iteration"
        )


def _storage_dtype(envs: VectorEnvs, policy: Policy) -> torch.dtype:
    """uint8 for unnormalized uint8 observations a network asks for (``observation_dtype``,
    as ``rl.cnn``'s do); float32 otherwise."""
    wanted = getattr(policy.network, "observation_dtype", torch.float32)
    emitted = envs.env.single_observation_space.dtype
    if wanted == torch.uint8 and emitted == np.uint8 and envs.obs_normalizer is None:
        return torch.uint8
    return torch.float32


class FiniteCheck:
    """Raises ``NonFiniteEnvError`` when vector step ``t`` stored a non-finite observation or
    reward in the float32 buffers (a float64 beyond 3.4e38, a normalization overflow), before
    the policy acts on it; ``RefuseNonFinite``'s screen, on what is stored."""

    def __init__(self, observations: Tensor, rewards: np.ndarray) -> None:
        self._observations = (
            observations.numpy().reshape(observations.shape[0], -1)
            if observations.is_floating_point()
            else None
        )
        self._rewards = rewards
        self._observation_ones = (
            None if self._observations is None else np.ones_like(self._observations[0])
        )
        self._reward_ones = np.ones_like(rewards[0])

    def __call__(self, t: int) -> None:
        """Check ``observations[t + 1]`` and ``rewards[t]``."""
        try:
            screen = self._rewards[t].dot(self._reward_ones)
            if self._observations is not None:
                screen += self._observations[t + 1].dot(self._observation_ones)
        except RuntimeWarning:  # inf - inf or an overflow, under ``-W error``
            screen = np.nan
        if not math.isfinite(screen):
            self._raise_first(t)

    def check_reset(self) -> None:
        """Check ``observations[0]`` after a reset."""
        if self._observations is not None and not np.isfinite(self._observations[0]).all():
            self._raise_first(-1)

    def _raise_first(self, t: int) -> None:
        num_envs = self._rewards.shape[1]
        if self._observations is not None:
            observations = self._observations[t + 1].reshape(num_envs, -1)
            raise_first_non_finite("observation", observations, t < 0, t)
        if t >= 0:
            raise_first_non_finite("reward", self._rewards[t].reshape(num_envs, 1), False, t)


class RolloutCollector:
    """Steps NEXT_STEP vector ``envs`` with ``policy``, ``steps_per_env`` vector steps per
    ``collect()``, sampling actions with ``generator``."""

    def __init__(
        self,
        envs: VectorEnvs,
        policy: Policy,
        steps_per_env: int,
        generator: torch.Generator | None = None,
    ) -> None:
        mode = envs.env.metadata.get("autoreset_mode")
        if mode != AutoresetMode.NEXT_STEP:
            raise ValueError(f"RolloutCollector needs AutoresetMode.NEXT_STEP, got {mode}")
        self.envs = envs
        self.policy = policy
        self.generator = generator
        num_envs, horizon = envs.num_envs, steps_per_env
        distribution = policy.distribution
        _check_buffer_fits(envs, policy, horizon)
        self._observations = torch.zeros(
            horizon + 1, num_envs, envs.observation_dim, dtype=_storage_dtype(envs, policy)
        )
        self._actions = torch.zeros(
            horizon, num_envs, *distribution.action_shape, dtype=distribution.action_dtype
        )
        self._rewards = np.zeros((horizon, num_envs), dtype=np.float32)
        self._terminated = np.zeros((horizon, num_envs), dtype=bool)
        self._truncated = np.zeros((horizon, num_envs), dtype=bool)
        self._valid = np.zeros((horizon, num_envs), dtype=bool)
        self._previous_done = np.zeros(num_envs, dtype=bool)
        self._reset_done = False  # observations[0] holds fresh reset observations
        self._collected = False  # observations[-1] holds the observations to continue from
        self._check_finite = FiniteCheck(self._observations, self._rewards)
        self._observation_rows = list(self._observations.unbind(0))
        self._action_rows = list(self._actions.unbind(0))
        # numpy's view of the observation buffer, (T + 1, N, *obs_shape as the env emits it)
        self._stored_observations = self._observations.numpy().reshape(
            horizon + 1, num_envs, *envs.env.single_observation_space.shape
        )

    def reset(self, seed: int | None = None) -> None:
        """Reset every env (sub-env ``i`` gets seed ``seed + i``)."""
        observations, _ = self.envs.env.reset(seed=seed)
        self._observations[0].copy_(torch.from_numpy(np.asarray(observations)))
        self._check_finite.check_reset()
        self._previous_done[:] = False
        self._reset_done, self._collected = True, False

    def collect(self) -> Rollout:
        """Run ``T`` vector steps and return the filled buffers."""
        if self._collected:
            self._observations[0].copy_(self._observations[-1])
        elif not self._reset_done:
            self.reset()
        self._collected = True
        env, generator = self.envs.env, self.generator
        network, distribution = fast_forward(self.policy.network), self.policy.distribution
        device = next(self.policy.parameters()).device
        # Per-step rows as views made once: indexing a tensor costs microseconds per step.
        observation_rows = self._observation_rows if device.type == "cpu" else None
        action_rows, stored_observations = self._action_rows, self._stored_observations
        sample = distribution.sampler(generator)
        with torch.inference_mode():  # a little cheaper per op than no_grad
            for t in range(self._rewards.shape[0]):
                observations = (
                    observation_rows[t]
                    if observation_rows is not None
                    else self._observations[t].to(device)
                )
                actions = sample(network(observations))
                action_rows[t].copy_(actions)
                try:
                    step = env.step(distribution.to_env(actions))
                except NonFiniteEnvError as error:  # from rl.envs.RefuseNonFinite
                    raise error.at_vector_step(t) from None
                observations, rewards, terminated, truncated, _ = step
                stored_observations[t + 1] = observations  # into the tensor, via numpy
                self._rewards[t] = rewards
                self._check_finite(t)
                self._terminated[t] = terminated
                self._truncated[t] = truncated
                np.logical_not(self._previous_done, out=self._valid[t])
                np.logical_or(terminated, truncated, out=self._previous_done)
        return Rollout(
            observations=self._observations,
            actions=self._actions,
            rewards=torch.from_numpy(self._rewards),
            terminated=torch.from_numpy(self._terminated),
            truncated=torch.from_numpy(self._truncated),
            valid=torch.from_numpy(self._valid),
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The observations the next ``collect()`` continues from and which envs ended."""
        next_observations = self._observations[-1] if self._collected else self._observations[0]
        return {
            "observations": next_observations.clone(),
            "previous_done": torch.from_numpy(self._previous_done.copy()),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Continue from a ``state_dict()``: the next ``collect()`` starts there."""
        self._observations[-1].copy_(state["observations"])
        self._previous_done[:] = state["previous_done"].numpy()
        self._reset_done, self._collected = True, True
