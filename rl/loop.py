"""The training loop: one iteration of ``TRPO.learn``, top to bottom, in ``train`` (its
diagram and the metrics row's fields: docs/architecture.md). Every rank runs this code and
calls its ``Comm`` at the same points, so all issue the same collectives in the same order;
only the main rank writes files, shows progress and evaluates. An iteration's value fit may
run beside the next rollout: its row, evaluation and checkpoint are written once it is done.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from rl.checkpoint import Checkpointer, CheckpointWarning, restore_training_state
from rl.comm import Comm
from rl.config import TRPOConfig
from rl.distributed import fit_value_data_parallel
from rl.envs import VectorEnvs
from rl.errors import EnvOutputError, EnvWorkerError, EvaluationInterrupted, NonFiniteEnvError
from rl.gae import gae
from rl.progress import Clock, Progress, make_progress
from rl.rollout import Rollout, RolloutCollector
from rl.run_files import RunFiles
from rl.signals import StopOnSignals
from rl.surrogate import make_policy_batch, make_policy_closure
from rl.value import fit_value, shuffled_orders
from rl.value_process import MAX_SHARED_BYTES, PendingFit, ValueFitProcess, can_fit_in_process
from rl.wrappers import FrozenObservationNormalizer, restore_reward_statistics, reward_statistics

# The agent the loop trains: an rl.trpo.TRPO (not imported: rl.trpo imports this module).
TRPO = Any

__all__ = ["train"]


def train(
    agent: TRPO,
    files: RunFiles | None,
    total_steps: int,
    progress: Progress,
    final_evaluation: bool,
    callback: Callable[[TRPO, dict[str, Any]], bool | None] | None,
) -> None:
    """Train ``agent`` until ``total_steps``; ``files`` (the main rank's run directory, if
    any) is locked by the caller."""
    config, comm = agent.config, agent.comm
    fit_process = value_fit_process(agent)  # first: it starts while the envs are made
    display = progress if comm.is_main else make_progress("none", total_steps)
    if files is not None:
        files.write_config(config.to_yaml())
    envs = agent._train_envs = agent._make_envs(config.num_envs, training=True)
    restore_normalization(agent, envs)
    collector = RolloutCollector(envs, agent.policy, config.steps_per_env, agent.action_generator)
    collector.reset(seed=agent.env_seed)
    clock = Clock(agent.step, resume_training_envs(agent, envs, collector))
    episodes_seen = int(envs.episode_stats.episode_count)
    checkpoints = None
    if config.run_dir is not None:
        checkpoints = Checkpointer(config, agent.state, comm, config.run_dir, envs, collector)
    agent.stopped_by = None
    signals = agent._signals = StopOnSignals(active=config.run_dir is not None).install()
    overlap = callback is None  # (a callback sees each iteration with its fit done)
    later: Finished | None = None  # an iteration whose value fit runs beside this rollout
    try:
        while agent.step < total_steps:
            start = time.perf_counter()
            rollout = collect(agent, collector)
            rollout_seconds = time.perf_counter() - start
            if later is not None:  # the GAE of this update needs the value function
                later.complete(agent, files, display, checkpoints, clock)
                later = None
            row, fit, batch = update(agent, rollout, fit_process)
            row |= {"rollout_time": rollout_seconds, "update_time": None}  # (filled below)
            finished = int(envs.episode_stats.episode_count) - episodes_seen
            episodes_seen += finished
            stats = envs.episode_stats
            episodes = (finished, stats.return_queue, stats.length_queue)
            measured, agent.stopped_by = comm.end_iteration(batch, episodes, signals.signal_name)
            row |= measured  # the batch's statistics, the episodes; one all-reduce in a job
            last = agent.step >= total_steps
            evaluate = evaluation_due(agent, total_steps) or (last and final_evaluation)
            save = checkpoints is not None and (checkpoints.due() or bool(agent.stopped_by))
            # Nothing reads the value function before the next GAE: its fit may run beside
            # the next rollout (deferred), the row and checkpoint written once it is done.
            defer = overlap and fit.apart and not (last or agent.stopped_by)
            done = Finished(fit, row, evaluate=evaluate, save=save)
            if defer and evaluate:  # evaluated now: it needs only the policy
                done.evaluation, done.evaluate = evaluate_during_training(agent, clock), False
                agent.stopped_by = comm.agree_to_stop(signals.signal_name)  # one during it?
                defer, done.save = not agent.stopped_by, save or bool(agent.stopped_by)
            if not defer:
                fit.result()  # (update_time includes the wait)
            row["update_time"] = time.perf_counter() - start - rollout_seconds
            row |= clock.rates(agent.step)
            if defer:  # the checkpoint's envs and RNGs are taken now
                if done.save and checkpoints is not None:
                    done.snapshot, done.save = checkpoints.capture(clock.time()), False
                later = done
                continue
            done.complete(agent, files, display, checkpoints, clock)
            if callback is not None and callback(agent, row) is False:
                break
            agent.stopped_by = comm.agree_to_stop(signals.signal_name)  # one in the callback?
            if agent.stopped_by:
                break
        if checkpoints is not None:
            checkpoints.save(clock.time())
    except BaseException:
        if later is not None:  # an env fault or a second Ctrl-C in the next rollout: the
            with contextlib.suppress(BaseException):  # deferred iteration is whole: write it
                later.complete(agent, files, display, checkpoints, clock, in_sync=False)
        display.abort()
        raise
    finally:
        signals.uninstall()
        agent._signals = None
        freeze_normalization(agent, envs)
        envs.close()
        agent._train_envs = None
    if files is not None:
        agent.save(files.model_path)
    display.finish(summary(agent, clock.elapsed()))
    if agent.stopped_by and files is not None:
        print(f"trpo: stopped by {agent.stopped_by} at step {agent.step} (iteration "
              f"{agent.iteration}); checkpoint saved in {files.directory}; continue with: "
              f"trpo train --resume {files.directory}", file=sys.stderr, flush=True)  # fmt: skip


def resume_training_envs(agent: TRPO, envs: VectorEnvs, collector: RolloutCollector) -> float:
    """After ``resume``: the fresh envs and the RNGs to the checkpoint's state (once);
    returns the run's wall time before this ``learn``."""
    if agent._resume_state is None:
        return 0.0
    checkpoint, agent._resume_state = agent._resume_state, None
    diverged = restore_training_state(agent.state, envs, collector, checkpoint)
    if diverged:
        warnings.warn(f"envs {diverged} did not return to their checkpointed state on replay "
                      "(not deterministic given their seed and actions): training continues "
                      "from the checkpoint, but not bit for bit", CheckpointWarning,
                      stacklevel=4)  # fmt: skip
    return float(checkpoint["progress"]["time"])


def freeze_normalization(agent: TRPO, envs: VectorEnvs) -> None:
    """Keep the training envs' statistics: frozen for evaluation, saved with the model."""
    if envs.obs_normalizer is not None:
        agent.obs_normalizer = FrozenObservationNormalizer.from_wrapper(envs.obs_normalizer)
    if envs.reward_normalizer is not None:
        agent.reward_statistics = reward_statistics(envs.reward_normalizer)


def restore_normalization(agent: TRPO, envs: VectorEnvs) -> None:
    """A later ``learn`` (or one after ``load``) continues from the kept statistics."""
    if envs.obs_normalizer is not None and agent.obs_normalizer is not None:
        agent.obs_normalizer.restore_into(envs.obs_normalizer)
    if envs.reward_normalizer is not None and agent.reward_statistics is not None:
        restore_reward_statistics(envs.reward_normalizer, agent.reward_statistics)


def summary(agent: TRPO, seconds: float) -> dict[str, Any]:
    """The line ``learn`` ends with: steps, iterations, seconds, the last evaluation."""
    done: dict[str, Any] = {"steps": agent.step, "iterations": agent.iteration}
    done["seconds"] = round(seconds, 1)
    if agent.last_evaluation is not None:
        done["eval_mean_return"] = agent.last_evaluation["mean_return"]
        done["eval_std_return"] = agent.last_evaluation["std_return"]
    return done


@dataclass
class Finished:
    """An updated iteration: its value fit (perhaps running), row, and evaluation and
    checkpoint snapshot if taken before the fit ended (``evaluate``/``save``: to take)."""

    fit: PendingFit
    row: dict[str, Any]
    evaluation: dict[str, Any] | None = None
    snapshot: dict[str, Any] | None = None
    evaluate: bool = False
    save: bool = False
    written: bool = False  # the row: a second ``complete`` (after an error) goes on from there

    def complete(
        self,
        agent: TRPO,
        files: RunFiles | None,
        display: Progress,
        checkpoints: Checkpointer | None,
        clock: Clock,
        in_sync: bool = True,
    ) -> None:
        """Wait for the value fit, then write the row, the evaluation and the checkpoint, in
        that order, each once (a second call, after an exception from the display, writes
        what the first did not); ``in_sync``: every rank completes it here (else no
        collective)."""
        if not self.written:
            fit = self.fit
            loss = resolve(agent, fit, self.row["iteration"]) if in_sync else fit.result()
            self.row["value_loss"], self.written = loss, True
            write_row(files, display, self.row)
        evaluation, self.evaluation = self.evaluation, None
        if self.evaluate:
            evaluation, self.evaluate = evaluate_during_training(agent, clock), False
        if evaluation is not None:
            if files is not None:
                files.append_eval(evaluation)
            display.evaluation(evaluation)
        if checkpoints is not None:
            snapshot = checkpoints.capture(clock.time()) if self.save else self.snapshot
            checkpoints.write(snapshot)


def write_row(files: RunFiles | None, display: Progress, row: dict[str, Any]) -> None:
    """Append ``row`` to metrics.jsonl and show it."""
    if files is not None:
        files.append_metrics(row)
    display.iteration(row)


# ------------------------------------------------------------------------- the pieces
def collect(agent: TRPO, collector: RolloutCollector) -> Rollout:
    """``collector.collect()`` (its normalization moments merged in ``end_iteration``); env
    faults raised naming the env, the step and the iteration (nothing learned or saved)."""
    agent.comm.start_statistics(collector.envs)  # merged in comm.end_iteration
    try:
        rollout = collector.collect()
    except NonFiniteEnvError as error:
        where = (agent.env_name, agent.step, agent.iteration + 1, agent.config.num_envs)
        raise error.located(*where) from None
    except EnvOutputError as error:
        raise EnvOutputError(
            f"env {agent.env_name!r}: {error} in iteration {agent.iteration + 1}, after step "
            f"{agent.step}; nothing of that iteration was learned or saved"
        ) from None
    except Exception as error:
        failure = collector.envs.worker_failure()
        if failure is None:
            raise
        cause = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise EnvWorkerError(
            f"env {agent.env_name!r}: {failure} ({cause}) in iteration "
            f"{agent.iteration + 1}, after step {agent.step}; nothing of that iteration "
            "was learned or saved"
        ) from error
    return rollout


def update(
    agent: TRPO, rollout: Rollout, fit_process: ValueFitProcess | None
) -> tuple[dict[str, Any], PendingFit, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """GAE, the value fit started and one policy step on the valid slots; counts the
    iteration. Returns its row (batch statistics still None), the value fit under way and
    the batch's entropies, values and returns."""
    config, device, comm = agent.config, agent.device, agent.comm
    horizon, num_envs = rollout.rewards.shape
    observations = rollout.observations.to(device)
    with torch.no_grad():
        all_values = agent.value(observations.flatten(0, 1)).view(horizon + 1, num_envs)
    values, next_values = all_values[:-1], all_values[1:]
    advantages, returns = gae(
        rollout.rewards.to(device), values, next_values, rollout.terminated.to(device),
        rollout.truncated.to(device), config.gamma, config.lam,
    )  # fmt: skip
    valid = rollout.valid.flatten().nonzero().squeeze(1).to(device)
    batch_observations = observations[:-1].flatten(0, 1)[valid]
    batch_actions = rollout.actions.to(device).flatten(0, 1)[valid]
    batch_advantages = advantages.flatten()[valid]
    batch_returns = returns.flatten()[valid]
    if config.normalize_advantages:
        batch_advantages = comm.standardize(batch_advantages)
    fit = start_value_fit(agent, batch_observations, batch_returns, fit_process)
    batch = make_policy_batch(agent.policy, batch_observations, batch_actions, batch_advantages)
    ggn_params = None if config.fvp == "hessian" else agent._policy_parameters
    try:
        result = agent.policy_optimizer.step(
            make_policy_closure(agent.policy, batch, ggn_params), num_samples=int(valid.numel())
        )
    except BaseException:
        with contextlib.suppress(BaseException):
            fit.result()
        raise
    entropies = agent.policy.distribution.entropy(batch.old_params)
    agent.step += agent.steps_per_iteration
    agent.iteration += 1
    row = {
        "step": agent.step,
        "iteration": agent.iteration,
        "samples": None,
        "kl": float(result.kl),
        "entropy": None,
        "value_loss": None,
        "explained_variance": None,
        "accepted": bool(result.accepted),
        "backtracks": int(result.backtracks),
        "step_fraction": float(result.step_fraction),
        "surrogate_improvement": float(result.loss_before) - float(result.loss_after),
        "expected_improvement": float(result.expected_improvement),
        "cg_iterations": int(result.cg_iterations),
        "cg_residual": float(result.cg_residual),
        "reason": result.reason or None,
    }
    return row, fit, (entropies, values.flatten()[valid], batch_returns)


# ------------------------------------------------------------------------- the value fit
def _fit_in_background(config: TRPOConfig, comm: Comm) -> bool:
    """``value_fit_in_background``, and not the all-reduce fit (its collectives stay in this
    thread)."""
    return config.value_fit_in_background and comm.value_fit != "all_reduce"


def start_value_fit_process(config: TRPOConfig, comm: Comm, device: torch.device) -> None:
    """Start the value-fit process ahead (``TRPO()``: it imports torch, ~2 s of CPU, while
    the agent is built and the envs made) where training would use it (value_fit_process)."""
    if device.type == "cpu" and _fit_in_background(config, comm):
        ValueFitProcess.shared()


def value_fit_process(agent: TRPO) -> ValueFitProcess | None:
    """The value-fit process (started, not waited for) if the fit runs in the background and
    can run there (the value network and its Adam on the CPU)."""
    if not _fit_in_background(agent.config, agent.comm):
        return None
    if not can_fit_in_process(agent.value, agent.value_optimizer):
        return None
    return ValueFitProcess.shared()  # started now or ahead; used once ready (start_value_fit)


def start_value_fit(
    agent: TRPO, observations: torch.Tensor, returns: torch.Tensor, process: ValueFitProcess | None
) -> PendingFit:
    """Start the value fit: in ``process`` if ready and the batch fits in shared memory;
    else, with ``value_fit_in_background``, in a thread beside the policy step (not the
    all-reduce fit); else here and now. The same numbers everywhere."""
    settings, comm = agent.config.value, agent.comm
    observations, returns, factor = comm.value_batch(observations, returns)
    minibatch_size = settings.minibatch_size * factor
    # the same on every rank (a replicated batch is the job's): whether the loop may leave
    # the fit running beside the next rollout, which the ranks must decide alike
    apart = process is not None and observations.numel() * observations.element_size() <= (
        MAX_SHARED_BYTES
    )
    if process is not None and apart and process.ready():
        process.bind(agent.value, agent.value_optimizer)
        return process.submit(
            observations, returns, settings.epochs, minibatch_size, agent.shuffle_generator
        )
    arguments = (agent.value, agent.value_optimizer, observations, returns, settings.epochs)
    if comm.value_fit == "all_reduce":  # here and now: its collectives stay in this thread
        generator = agent.shuffle_generator
        pending = PendingFit(fit_value_data_parallel(*arguments, minibatch_size, generator,
                                                     comm.value_group))  # fmt: skip
    else:  # the shuffles drawn here, now: a checkpoint may capture the generator meanwhile
        orders = shuffled_orders(len(returns), settings.epochs, agent.shuffle_generator,
                                 returns.device)  # fmt: skip
        run = functools.partial(fit_value, *arguments, minibatch_size, orders=orders)
        # in a thread beside the policy step; not when it could go on beside the rollout
        # (the process is starting): the GIL would slow the rollout down more (measured)
        thread = agent.config.value_fit_in_background and not apart
        pending = PendingFit(thread=run) if thread else PendingFit(run())
    pending.apart = apart  # the same on every rank, ready or not
    return pending


def resolve(agent: TRPO, fit: PendingFit, iteration: int) -> float:
    """Wait for iteration ``iteration``'s value fit; its loss."""
    loss = fit.result()
    agent.comm.check_value_in_sync(agent.value, iteration)
    return loss


# ------------------------------------------------------------------------- evaluation
def evaluation_due(agent: TRPO, total_steps: int) -> bool:
    """After each ``eval_every`` boundary crossed by the last iteration, and at the end."""
    every = agent.config.eval_every
    if every <= 0:
        return False
    previous_step = agent.step - agent.steps_per_iteration
    crossed = agent.step // every > previous_step // every
    return crossed or agent.step >= total_steps


def evaluate_during_training(agent: TRPO, clock: Clock) -> dict[str, Any] | None:
    """This iteration's evaluation (main rank; else None), None if a stop signal cut it."""
    if not agent.comm.is_main:
        return None
    with clock.paused():
        try:
            stats = agent.evaluate(agent.config.eval_episodes)
        except EvaluationInterrupted as interrupted:
            print(f"trpo: evaluation at step {agent.step} skipped: {interrupted} received",
                  file=sys.stderr, flush=True)  # fmt: skip
            return None
    agent.last_evaluation = {"step": agent.step, **stats, "time": clock.time()}
    return agent.last_evaluation
