"""Rollout collection into preallocated time-major ``(T, N)`` buffers.

One policy forward per vector step on the whole batch of ``N`` envs; no per-env Python
loop. Under gymnasium's NEXT_STEP autoreset the step after an episode's end is a *reset
step*: its action is ignored, its observation is the new episode's first. Such a slot holds
no transition and is marked ``valid = False``; the update learns only from valid slots.

Because the final observation of an episode is returned by the step that ended it, row
``t + 1`` of ``observations`` is always the observation that followed step ``t`` in each
env, final observations included: ``V(observations[1:])`` gives the bootstrap values that
``rl.gae`` needs, all normalized by the same wrapper as the observations they follow.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import Tensor

from rl.envs import VectorEnvs
from rl.policies import Policy

__all__ = ["Rollout", "RolloutCollector"]


@dataclass(frozen=True)
class Rollout:
    """One iteration of experience. Views into the collector's buffers: they are overwritten
    by the next ``collect()``.

    Attributes:
        observations (Tensor): ``(T + 1, N, obs_dim)`` float32; row ``t + 1`` follows step ``t``.
        actions (Tensor): ``(T, N, *action_shape)`` as sampled (Box actions unclipped).
        rewards (Tensor): ``(T, N)`` float32, as returned by the (normalizing) vector env.
        terminated (Tensor): ``(T, N)`` bool.
        truncated (Tensor): ``(T, N)`` bool.
        valid (Tensor): ``(T, N)`` bool; False on NEXT_STEP reset slots, which hold no transition.
    """

    observations: Tensor
    actions: Tensor
    rewards: Tensor
    terminated: Tensor
    truncated: Tensor
    valid: Tensor


class RolloutCollector:
    """Steps a vector env with a policy, ``steps_per_env`` vector steps per ``collect()``.

    Args:
        envs (VectorEnvs): vector env in NEXT_STEP autoreset mode.
        policy (Policy): acts on ``(N, obs_dim)`` float32 observations.
        steps_per_env (int): ``T``, vector steps per rollout.
        generator (torch.Generator, optional): source of action-sampling noise.
    """

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
        self._observations = torch.zeros(horizon + 1, num_envs, envs.observation_dim)
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

    def reset(self, seed: int | None = None) -> None:
        """Reset every env (sub-env ``i`` gets seed ``seed + i``)."""
        observations, _ = self.envs.env.reset(seed=seed)
        self._observations[0].copy_(torch.from_numpy(np.asarray(observations)))
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
        network, distribution = self.policy.network, self.policy.distribution
        device = next(self.policy.parameters()).device
        with torch.no_grad():
            for t in range(self._rewards.shape[0]):
                actions = distribution.act(
                    network(self._observations[t].to(device)), False, generator
                )
                self._actions[t] = actions
                step = env.step(distribution.to_env(actions))
                observations, rewards, terminated, truncated, _ = step
                self._observations[t + 1].copy_(torch.from_numpy(np.asarray(observations)))
                self._rewards[t] = rewards
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
