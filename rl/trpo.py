"""TRPO (Schulman et al., 2015) on gymnasium vector envs: builds a run's networks,
optimizers and envs, trains with ``rl.loop.train``, acts, evaluates, saves and resumes."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from rl.checkpoint import CheckpointWarning, load_run_of_job
from rl.cnn import is_image_space, make_image_policy, make_image_value
from rl.comm import Comm, rank_seed
from rl.config import TRPOConfig
from rl.envs import (
    EnvFactory,
    VectorEnvs,
    flatten_observations,
    make_env_factory,
    make_vector_envs,
    raw_observation_space,
)
from rl.evaluation import EVAL_SEED_OFFSET, play_vector_episodes
from rl.loop import start_value_fit_process, train
from rl.networks import check_device_available
from rl.policies import Policy, make_distribution, make_policy
from rl.progress import Progress, ProgressMode, make_progress
from rl.replay import RecordingFactory
from rl.run_files import (
    CHECKPOINT_FORMAT,
    MODEL_FILE,
    CheckpointError,
    RunFiles,
    atomic_torch_save,
    load_plain_file,
)
from rl.run_lock import acquire_run_dir, hold_run_dir, release_run_dir
from rl.signals import StopOnSignals
from rl.state import MODEL_FORMAT, InState, TrainingState
from rl.value import ValueNetwork, make_value
from rl.wrappers import FrozenObservationNormalizer
from trust_region import TrustRegionOptimizer

__all__ = ["TRPO"]


MAX_EVAL_ENVS = 16
DEFAULT_EVAL_STEP_CAP = 10_000  # evaluation episodes of envs without a time limit
# the TRPOConfig fields that are TrustRegionOptimizer's arguments of the same name
TRUST_REGION_FIELDS = ("max_kl", "damping", "cg_iters", "backtrack_iters", "backtrack_coeff",
                       "accept_ratio", "fvp", "fvp_subsample", "step_scaling")  # fmt: skip


class TRPO:
    """Trust Region Policy Optimization for one gymnasium environment.

    Args:
        config (TRPOConfig or str): the run's settings; an env id means
            ``TRPOConfig.from_preset(env_id)``, as ``trpo train ENV``.
        env_fn (callable, optional): makes one env (custom envs); overrides ``config.env_id``.
        policy (nn.Module, optional): a ``rl.policies.Policy``, or a module mapping
            ``(B, obs_dim)`` flat observations to the Gaussian mean or the logits. Default:
            an MLP from ``config.policy`` (Nature CNN + MLP head for image observations).
        value (nn.Module, optional): ``(B, obs_dim) -> (B,)`` or ``(B, 1)``; default as policy.
        comm (rl.comm.Comm, optional): the job this process is a rank of (``rl.train``
            passes a ``DistributedComm``); one process by default.

    Seeds torch's global generator; ``config.torch_threads > 0`` sets torch's CPU threads.
    """

    # What learning changes, kept in ``self.state`` (rl.state.TrainingState).
    policy = InState()
    value = InState()
    policy_optimizer = InState()
    value_optimizer = InState()
    action_generator = InState()
    shuffle_generator = InState()
    step = InState()
    iteration = InState()
    obs_normalizer = InState()
    reward_statistics = InState()
    last_evaluation = InState()

    def __init__(
        self,
        config: TRPOConfig | str,
        env_fn: EnvFactory | None = None,
        policy: nn.Module | None = None,
        value: nn.Module | None = None,
        comm: Comm | None = None,
        *,
        _learns: bool = True,
    ) -> None:
        self.comm = comm = comm if comm is not None else Comm()
        if isinstance(config, str):
            config = TRPOConfig.from_preset(config)
        elif not isinstance(config, TRPOConfig):
            raise TypeError(
                f"TRPO takes a TRPOConfig or an env id, got {type(config).__name__}: e.g. "
                "TRPO('CartPole-v1') or TRPO(TRPOConfig.from_preset('CartPole-v1', seed=1))"
            )
        self.config = config = comm.broadcast(config)
        self.device = comm.place(torch.device(config.device))  # (a job: per rank)
        check_device_available(self.device)
        comm.setup(config.value.distributed_fit, self.device)
        if self.device.type == "cpu" and config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        if _learns:  # the value-fit process imports torch while the env's modules load
            start_value_fit_process(config, comm, self.device)
        self._env_factory = make_env_factory(config.env_id, config.env_kwargs, env_fn, config.atari)
        # what errors call the env: its id, or the factory's name for envs built by env_fn
        self.env_name = config.env_id or getattr(env_fn, "__qualname__", None) or repr(env_fn)
        probe = self._env_factory()
        limit = probe.spec.max_episode_steps if probe.spec is not None else None
        self._episode_limit = limit if isinstance(limit, int) and limit > 0 else None
        self.observation_space: spaces.Box = probe.observation_space
        self.raw_observation_space: spaces.Space = raw_observation_space(probe)
        self.action_space: spaces.Space = probe.action_space
        probe.close()
        self.observation_dim = int(np.prod(self.observation_space.shape))

        torch.manual_seed(config.seed)
        policy = self._build_policy(policy).to(self.device)
        value = self._build_value(value).to(self.device)
        settings = {name: getattr(config, name) for name in TRUST_REGION_FIELDS}
        policy_optimizer = TrustRegionOptimizer(
            policy.parameters(), **settings, process_group=comm.group
        )
        self._policy_parameters = [p for g in policy_optimizer.param_groups for p in g["params"]]
        # foreach: the single-tensor loop's numbers bit for bit, in fewer operator calls
        value_optimizer = torch.optim.Adam(
            value.parameters(), lr=config.value.learning_rate, foreach=True
        )
        # Rank r of a job: its envs and actions seeded with rank_seed(seed, r) (rank 0's is
        # seed); a replicated value fit shuffles the job's batch alike on every rank.
        self.env_seed = rank_seed(config.seed, comm.rank)  # sub-env i first reset with +i
        shuffle_seed = config.seed if comm.value_fit in ("local", "replicate") else self.env_seed
        self.state = TrainingState(
            policy,
            value,
            policy_optimizer,
            value_optimizer,
            torch.Generator(device=self.device).manual_seed(self.env_seed),
            torch.Generator().manual_seed(shuffle_seed + 1),
        )
        if comm.world_size > 1:
            comm.broadcast_parameters(value)

        self.resumed_from: Path | None = None  # the checkpoint ``resume`` loaded
        self._resume_hold: Path | None = None  # run_dir locked by ``resume`` until ``learn`` ends
        self._signals: StopOnSignals | None = None  # while ``learn`` runs: its stop signals
        self.stopped_by: str | None = None  # "SIGINT"/"SIGTERM" if the last learn was stopped
        self._resume_state: dict[str, Any] | None = None  # env/RNG state for the next learn
        self._train_envs: VectorEnvs | None = None
        self._eval_envs: VectorEnvs | None = None

    def _build_policy(self, policy: nn.Module | None) -> Policy:
        config, space = self.config, self.raw_observation_space
        if policy is None and is_image_space(space):
            return make_image_policy(
                space, self.action_space, config.policy, config.normalize_observations
            )
        if policy is None:
            return make_policy(self.observation_dim, self.action_space, config.policy)
        if isinstance(policy, Policy):
            return policy
        return Policy(policy, make_distribution(self.action_space, config.policy.log_std_init))

    def _build_value(self, value: nn.Module | None) -> nn.Module:
        if value is None and is_image_space(self.raw_observation_space):
            return make_image_value(self.raw_observation_space, self.config.value)
        if value is None:
            return make_value(self.observation_dim, self.config.value)
        return value if isinstance(value, ValueNetwork) else ValueNetwork(value)

    def _make_envs(self, num_envs: int, training: bool) -> VectorEnvs:
        config = self.config
        factory = self._env_factory
        if training:  # training envs record their episodes for exact resume (rl.checkpoint)
            factory = RecordingFactory(factory, ignore_signals=config.vector_mode == "async")
        return make_vector_envs(
            factory,
            num_envs,
            config.vector_mode if training else "sync",
            normalize_observations=training and config.normalize_observations,
            normalize_rewards=training and config.normalize_rewards,
            gamma=config.gamma,
            episode_window=config.episode_window,
        )

    def learn(
        self,
        total_steps: int | None = None,
        progress: ProgressMode | Progress = "auto",
        final_evaluation: bool = False,
        callback: Callable[[TRPO, dict[str, Any]], bool | None] | None = None,
    ) -> TRPO:
        """Train until ``total_steps`` env steps in all (default: ``config.total_steps``).

        With ``config.run_dir``, writes config.yaml, metrics.jsonl, evals.jsonl, model.pt and
        checkpoints; a SIGINT/SIGTERM stops after the iteration with a checkpoint
        (``stopped_by``), a second one at once. ``progress``: "auto", "rich", "plain",
        "quiet", "none" or a Progress. ``final_evaluation``: evaluate at the end even when
        ``eval_every`` is 0. ``callback(agent, row)`` after each iteration; ``False`` stops.
        """
        config = self.config
        total_steps = config.total_steps if total_steps is None else total_steps
        display = (
            progress if isinstance(progress, Progress) else make_progress(progress, total_steps)
        )
        write = config.run_dir is not None and self.comm.is_main
        files = RunFiles(config.run_dir) if write else None
        # RunDirLockedError if another process writes there
        lock = hold_run_dir(files.directory) if files is not None else contextlib.nullcontext()
        try:
            with lock:
                train(self, files, total_steps, display, final_evaluation, callback)
                return self
        finally:
            self._release_resume_hold()

    @property
    def steps_per_iteration(self) -> int:
        """Env steps per iteration of the job: ``config.steps_per_iteration`` per rank."""
        return self.config.steps_per_iteration * self.comm.world_size

    def _current_obs_normalizer(self) -> FrozenObservationNormalizer | None:
        """Statistics frozen now: a snapshot of the live wrapper while training, else saved."""
        envs = self._train_envs
        if envs is not None and envs.obs_normalizer is not None:
            return FrozenObservationNormalizer.from_wrapper(envs.obs_normalizer)
        return self.obs_normalizer

    def _act(
        self,
        flat_observations: np.ndarray,
        normalizer: FrozenObservationNormalizer | None,
        deterministic: bool,
    ) -> np.ndarray:
        if normalizer is not None:
            flat_observations = normalizer(flat_observations)
        observations = torch.as_tensor(flat_observations, dtype=torch.float32, device=self.device)
        actions = self.policy.act(observations, deterministic, self.action_generator)
        return self.policy.distribution.to_env(actions)

    def predict(self, observation: Any, deterministic: bool = True) -> Any:
        """The env action for one raw observation, or the actions of a batch (leading B)."""
        flat, single = flatten_observations(self.raw_observation_space, observation)
        actions = self._act(flat, self._current_obs_normalizer(), deterministic)
        return actions[0] if single else actions

    def evaluate(
        self, episodes: int = 10, deterministic: bool = True, seed: int | None = None
    ) -> dict[str, float]:
        """``{"mean_return", "std_return", "mean_length"}`` of ``episodes`` episodes (raw
        returns, statistics frozen), envs seeded from ``seed`` (default seed + 1,000,000)."""
        if episodes < 1:
            raise ValueError(f"Invalid episodes: {episodes} (must be >= 1)")
        seed = self.config.seed + EVAL_SEED_OFFSET if seed is None else seed
        num_envs = min(episodes, MAX_EVAL_ENVS)
        if self._eval_envs is None or self._eval_envs.num_envs != num_envs:
            self.close_eval_envs()
            self._eval_envs = self._make_envs(num_envs, training=False)
        normalizer = self._current_obs_normalizer()
        signals = self._signals
        return play_vector_episodes(
            self._eval_envs.env,
            lambda observations: self._act(observations, normalizer, deterministic),
            episodes,
            seed,
            self.eval_step_cap,
            lambda: signals.signal_name if signals is not None else None,
        )

    @property
    def eval_step_cap(self) -> int:
        """Evaluation episodes are cut here: eval_max_episode_steps, time limit, 10,000."""
        return self.config.eval_max_episode_steps or self._episode_limit or DEFAULT_EVAL_STEP_CAP

    def state_dict(self) -> dict[str, Any]:
        """The model file's content: networks, counters, statistics, config (plain data)."""
        return self.state.model_dict(self.config.model_dump(mode="json"))

    def save(self, path: str | Path) -> None:
        """Save the agent atomically (temporary file, fsync, rename)."""
        atomic_torch_save(self.state_dict(), path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        env_fn: EnvFactory | None = None,
        policy: nn.Module | None = None,
        value: nn.Module | None = None,
        device: str | None = None,
    ) -> TRPO:
        """Load an agent (or a checkpoint's model, or a run directory's model.pt) saved by
        ``save``, with ``weights_only`` loading: a file never runs code. Pass ``env_fn``/modules
        if it was built with them.
        Raises CheckpointError (unreadable, not plain data, not fitting) or ConfigError."""
        if Path(path).is_dir():  # a run directory: its final model
            path = Path(path) / MODEL_FILE
        state = load_plain_file(path)
        if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT:
            state = state["model"]
        if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
            raise CheckpointError(f"{str(path)!r} is not an rl TRPO model file ({MODEL_FORMAT})")
        config = TRPOConfig.from_dict(state["config"])
        if device is not None:
            config = config.with_overrides({"device": device})
        agent = cls(config, env_fn=env_fn, policy=policy, value=value, _learns=False)
        where = f"in {str(path)!r}"
        agent.state.load_model_dict(state, where, config.env_id, agent.observation_dim)
        return agent

    @classmethod
    def resume(
        cls,
        run_dir: str | Path,
        total_steps: int | None = None,
        env_fn: EnvFactory | None = None,
        policy: nn.Module | None = None,
        value: nn.Module | None = None,
        restart: bool = False,
        comm: Comm | None = None,
    ) -> TRPO:
        """Continue a run from ``run_dir``'s config.yaml and latest checkpoint: the next
        ``learn()`` goes on exactly from there; rows written after it are dropped. Without a
        checkpoint it starts afresh (``resumed_from`` None); a finished run (model.pt)
        without one is refused unless ``restart``. ``total_steps``: a new target; ``comm``:
        as for ``TRPO`` (the checkpoint must come from as many ranks). Raises CheckpointError.
        """
        comm = comm if comm is not None else Comm()
        config, checkpoint, path = load_run_of_job(run_dir, total_steps, restart, comm)
        agent = cls(config, env_fn=env_fn, policy=policy, value=value, comm=comm)
        if checkpoint is not None:
            agent.state.load_state_dict(checkpoint, config.env_id, agent.observation_dim)
            agent.resumed_from, agent._resume_state = path, checkpoint
        if comm.is_main:
            acquire_run_dir(run_dir)  # from now (rows rewritten) until ``learn`` ends
            agent._resume_hold = Path(run_dir)
            for repair in RunFiles(run_dir).drop_rows_after(agent.iteration, agent.step):
                warnings.warn(repair, CheckpointWarning, stacklevel=2)
        return agent

    def _release_resume_hold(self) -> None:
        hold, self._resume_hold = self._resume_hold, None
        if hold is not None:
            release_run_dir(hold)

    def close_eval_envs(self) -> None:
        if self._eval_envs is not None:
            self._eval_envs.close()
            self._eval_envs = None

    def close(self) -> None:
        """Close the evaluation envs; release the run directory held since ``resume``."""
        self.close_eval_envs()
        self._release_resume_hold()
