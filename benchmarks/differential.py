"""Differential test: sb3-contrib's TRPO (RL Zoo MuJoCo settings) against ours, piece by piece.

Both libraries get the SAME inputs at each stage and we measure how far their outputs are:

1. normalization: one recorded raw stream (random actions, 2 envs) replayed through sb3's
   ``VecNormalize`` (over ``DummyVecEnv``) and through rl's wrapper stack
   (``rl.envs.make_vector_envs``: LeanNormalizeObservation / LeanNormalizeReward, NEXT_STEP
   autoreset); outputs compared transition by transition, running statistics at the end.
2. GAE: one synthetic (T, N) batch with truncations and terminations through sb3's
   ``RolloutBuffer.compute_returns_and_advantage`` (truncation bootstrap folded into the
   reward, as ``collect_rollouts`` does) and through ``rl.gae``.
3. policy step: sb3 collects one real rollout (1024 x 2 envs, VecNormalize); its weights are
   copied into ``rl.TRPO``'s networks; sb3's ``TRPO.train`` and our
   ``TrustRegionOptimizer.step`` (fvp 'auto' = ggn-head, and 'hessian') run on that batch.
   Also: the initial weights each library draws from its own seed (singular values, biases).
4. value fit: sb3's critic loop (inside the same ``train`` call) and ``rl.value.fit_value``
   from the same weights, on the same (observations, returns) and the same minibatch order
   (sb3's ``np.random.permutation`` is replaced by the orders our generator draws); ours with
   its own Adam (eps 1e-8) and with sb3's eps 1e-5.

Run (about a minute, one torch thread):
    python benchmarks/differential.py --env HalfCheetah-v5
    python benchmarks/differential.py --env Walker2d-v5
Prints a markdown table; docs/differential.md discusses it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sb3_runner import zoo_settings

import rl
from rl.envs import make_vector_envs, quiet_mujoco_deprecations
from rl.gae import gae
from rl.surrogate import PolicyBatch, make_policy_closure
from rl.value import fit_value

ROWS: list[tuple[str, str, str]] = []


def row(piece: str, quantity: str, value: Any) -> None:
    text = f"{value:.3g}" if isinstance(value, float) else str(value)
    ROWS.append((piece, quantity, text))


def rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


# ----------------------------------------------------------------------- 1. normalization
def record_stream(env_id: str, transitions: int, seed: int) -> list[list[dict]]:
    """Per env: episodes of {reset, obs[], rew[], term[], trunc[]} under random actions."""
    streams = []
    for i in range(2):
        with quiet_mujoco_deprecations():
            env = gym.make(env_id)
        env.action_space.seed(seed + i)
        obs, _ = env.reset(seed=seed + i)
        episodes = [dict(reset=obs, obs=[], rew=[], term=[], trunc=[])]
        for _ in range(transitions):
            obs, reward, term, trunc, _ = env.step(env.action_space.sample())
            ep = episodes[-1]
            for key, v in (("obs", obs), ("rew", reward), ("term", term), ("trunc", trunc)):
                ep[key].append(v)
            if term or trunc:
                obs, _ = env.reset()
                episodes.append(dict(reset=obs, obs=[], rew=[], term=[], trunc=[]))
        env.close()
        streams.append(episodes)
    return streams


class ReplayEnv(gym.Env):
    """Plays back one recorded stream; actions are ignored; past its end it repeats zeros."""

    def __init__(self, episodes: list[dict], observation_space, action_space) -> None:
        self.episodes, self.episode, self.t = episodes, -1, 0
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        self.episode, self.t = self.episode + 1, 0
        if self.episode >= len(self.episodes):
            return np.zeros(self.observation_space.shape), {}
        return self.episodes[self.episode]["reset"], {}

    def step(self, action):
        ep = self.episodes[min(self.episode, len(self.episodes) - 1)]
        if self.episode >= len(self.episodes) or self.t >= len(ep["obs"]):
            return np.zeros(self.observation_space.shape), 0.0, False, False, {}
        t, self.t = self.t, self.t + 1
        return ep["obs"][t], float(ep["rew"][t]), bool(ep["term"][t]), bool(ep["trunc"][t]), {}


def replay_sb3(streams, spaces_, steps: int):
    """VecNormalize(DummyVecEnv) on the replay; per-env lists of (next_obs, reward)."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = VecNormalize(DummyVecEnv([lambda s=s: ReplayEnv(s, *spaces_) for s in streams]))
    venv.reset()
    out: list[list[tuple]] = [[], []]
    trunc_returns = []
    actions = np.zeros((2, *spaces_[1].shape), np.float32)
    for _ in range(steps):
        obs, rew, dones, infos = venv.step(actions)
        for i in range(2):
            next_obs = infos[i]["terminal_observation"] if dones[i] else obs[i]
            out[i].append((next_obs, rew[i]))
            if dones[i] and infos[i].get("TimeLimit.truncated"):
                trunc_returns.append(float(venv.returns[i]))
    return venv, out, trunc_returns


def replay_ours(streams, spaces_, steps: int):
    """rl.envs.make_vector_envs (normalize obs and rewards) on the replay; same lists."""
    made = iter(streams)
    envs = make_vector_envs(lambda: ReplayEnv(next(made), *spaces_), 2, "sync", True, True, 0.99)
    envs.env.reset(seed=0)
    out: list[list[tuple]] = [[], []]
    previous_done = np.zeros(2, bool)
    trunc_returns = []
    actions = np.zeros((2, *spaces_[1].shape), np.float32)
    while min(len(o) for o in out) < steps:
        obs, rew, term, trunc, _ = envs.env.step(actions)
        for i in range(2):
            if not previous_done[i]:  # a reset slot holds no transition
                out[i].append((obs[i], rew[i]))
                if trunc[i]:
                    trunc_returns.append(float(envs.reward_normalizer.accumulated_reward[i]))
        previous_done = term | trunc
    return envs, [o[:steps] for o in out], trunc_returns


def compare_normalization(env_id: str, seed: int, steps: int) -> None:
    streams = record_stream(env_id, steps, seed)
    with quiet_mujoco_deprecations():
        probe = gym.make(env_id)
    spaces_ = (probe.observation_space, probe.action_space)
    probe.close()
    venv, sb3_out, sb3_trunc = replay_sb3(streams, spaces_, steps)
    envs, our_out, our_trunc = replay_ours(streams, spaces_, steps)
    so, oo = venv.obs_rms, envs.obs_normalizer.obs_rms
    sr, orr = venv.ret_rms, envs.reward_normalizer.return_rms
    p = "1 normalization"
    ends = sum(len(s) - 1 for s in streams)
    row(p, "transitions per env / episode ends (both envs)", f"{steps} / {ends}")
    row(
        p,
        "obs running mean: max abs diff / max rel diff",
        f"{np.abs(so.mean - oo.mean).max():.3g} / {rel(oo.mean, so.mean):.3g}",
    )
    row(p, "obs running var: max rel diff", rel(oo.var, so.var))
    row(p, "obs count sb3 / ours", f"{so.count:.0f} / {oo.count:.0f}")
    row(
        p,
        "return std sb3 / ours (ratio)",
        f"{np.sqrt(sr.var):.4g} / {np.sqrt(orr.var):.4g} ({np.sqrt(sr.var / orr.var):.3f})",
    )
    sb3_obs = np.array([o for env in sb3_out for o, _ in env])
    our_obs = np.array([o for env in our_out for o, _ in env])
    sb3_rew = np.array([r for env in sb3_out for _, r in env])
    our_rew = np.array([r for env in our_out for _, r in env])
    row(p, "normalized obs: max abs diff (all transitions)", float(np.abs(sb3_obs - our_obs).max()))
    row(p, "normalized obs: mean abs diff", float(np.abs(sb3_obs - our_obs).mean()))
    row(
        p,
        "sb3 obs entries clipped at +-10 / ours beyond +-10",
        f"{np.mean(np.abs(sb3_obs) >= 10):.2e} / {np.mean(np.abs(our_obs) > 10):.2e}",
    )
    ratio = sb3_rew[our_rew != 0] / our_rew[our_rew != 0]
    row(
        p,
        "normalized reward ratio sb3/ours: median [5%, 95%]",
        f"{np.median(ratio):.3f} [{np.percentile(ratio, 5):.3f}, {np.percentile(ratio, 95):.3f}]",
    )
    row(
        p,
        "sb3 rewards clipped at +-10 / ours beyond +-10",
        f"{np.mean(np.abs(sb3_rew) >= 10):.2e} / {np.mean(np.abs(our_rew) > 10):.2e}",
    )
    row(
        p,
        "return accumulator after truncation: sb3 / ours (mean)",
        f"{np.mean(sb3_trunc):.3g} / {np.mean(our_trunc):.3g} (n={len(sb3_trunc)})"
        if sb3_trunc
        else "no truncation in stream",
    )
    venv.close()
    envs.close()


# ----------------------------------------------------------------------------- 2. GAE
def compare_gae(seed: int, gamma: float = 0.99, lam: float = 0.95) -> None:
    """Synthetic (T, N) batch; truncations at t = 999 (env 0) and T-1 (env 1), terminations."""
    from gymnasium import spaces
    from stable_baselines3.common.buffers import RolloutBuffer

    T, N = 1024, 2
    g = np.random.default_rng(seed)
    rewards = g.normal(size=(T, N)).astype(np.float32)
    values = g.normal(size=(T, N)).astype(np.float32)
    terminated = np.zeros((T, N), bool)
    truncated = np.zeros((T, N), bool)
    truncated[999, 0] = truncated[T - 1, 1] = True
    terminated[[100, 517], 1] = True
    done = terminated | truncated
    final_values = g.normal(size=(T, N)).astype(np.float32)  # V(final obs) at done steps
    next_values = np.concatenate([values[1:], final_values[-1:]])
    next_values = np.where(done, final_values, next_values).astype(np.float32)
    ours_adv, ours_ret = gae(
        *(torch.from_numpy(x) for x in (rewards, values, next_values, terminated, truncated)),
        gamma,
        lam,
    )
    buffer = RolloutBuffer(
        T,
        spaces.Box(-1, 1, (1,)),
        spaces.Box(-1, 1, (1,)),
        "cpu",
        gae_lambda=lam,
        gamma=gamma,
        n_envs=N,
    )
    starts = np.concatenate([np.zeros((1, N), bool), done[:-1]])
    for t in range(T):  # collect_rollouts: rewards[idx] += gamma * V(terminal obs) on timeouts
        r = rewards[t] + np.where(truncated[t], gamma * final_values[t], 0.0).astype(np.float32)
        buffer.add(
            np.zeros((N, 1)),
            np.zeros((N, 1)),
            r,
            starts[t],
            torch.from_numpy(values[t]),
            torch.zeros(N),
        )
    last = np.where(done[-1], 0.0, next_values[-1]).astype(np.float32)  # unused where done
    buffer.compute_returns_and_advantage(torch.from_numpy(last), done[-1])
    p = "2 GAE"
    row(
        p,
        "advantages: max abs diff (max |A|)",
        f"{np.abs(buffer.advantages - ours_adv.numpy()).max():.3g} "
        f"({np.abs(buffer.advantages).max():.3g})",
    )
    row(p, "returns: max abs diff", float(np.abs(buffer.returns - ours_ret.numpy()).max()))


# ------------------------------------------------------------- 3 and 4. policy step, value fit
POLICY_PAIRS = [
    ("mlp_extractor.policy_net.0", "network.0"),
    ("mlp_extractor.policy_net.2", "network.2"),
    ("action_net", "network.4"),
]
VALUE_PAIRS = [
    ("mlp_extractor.value_net.0", "network.0"),
    ("mlp_extractor.value_net.2", "network.2"),
    ("value_net", "network.4"),
]


def sb3_rollout(env_id: str, seed: int):
    """sb3-contrib TRPO with the zoo settings on VecNormalize, one rollout collected."""
    from sb3_contrib import TRPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    with quiet_mujoco_deprecations():
        venv = VecNormalize(make_vec_env(env_id, n_envs=2, seed=seed))
    model = TRPO("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **zoo_settings(env_id))
    _, callback = model._setup_learn(model.n_steps * 2, None)
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)
    return model


def sb3_state(policy, pairs, log_std: bool) -> dict[str, torch.Tensor]:
    """sb3 parameters under our names (policy.network.* / value.network.*)."""
    params = dict(policy.named_parameters())
    state = {
        f"{ours}.{k}": params[f"{sb3}.{k}"].detach().clone()
        for sb3, ours in pairs
        for k in ("weight", "bias")
    }
    if log_std:
        state["distribution.log_std"] = params["log_std"].detach().clone()
    return state


def flat(state: dict[str, torch.Tensor], module: torch.nn.Module) -> torch.Tensor:
    """Parameters in ``module.named_parameters()`` order (ours), flattened."""
    return torch.cat([state[name].reshape(-1) for name, _ in module.named_parameters()])


def buffer_batch(buffer) -> dict[str, torch.Tensor]:
    """The rollout buffer's arrays flattened env-major, as its ``get`` does."""
    f = buffer.swap_and_flatten
    data = {
        k: torch.from_numpy(f(getattr(buffer, k)).copy()).float()
        for k in ("observations", "actions", "log_probs", "advantages", "returns")
    }
    for k in ("log_probs", "advantages", "returns"):  # (n, 1) -> (n,)
        data[k] = data[k].squeeze(-1)
    return data  # observations: float32 values stored as float64 by sb3, cast exactly


@contextlib.contextmanager
def patched_sb3(orders: list[np.ndarray], counter: list[int]):
    """sb3's buffer permutations := identity (policy pass), then ``orders`` (critic epochs);
    sb3_contrib's kl_divergence counts its calls (1 + line-search candidates)."""
    import sb3_contrib.trpo.trpo as trpo_module

    queue = [None, *orders]
    real_perm, real_kl = np.random.permutation, trpo_module.kl_divergence

    def permutation(n):
        order = queue.pop(0)
        return np.arange(n) if order is None else order

    def kl(*args):
        counter[0] += 1
        return real_kl(*args)

    np.random.permutation, trpo_module.kl_divergence = permutation, kl
    try:
        yield
    finally:
        np.random.permutation, trpo_module.kl_divergence = real_perm, real_kl


def surrogate_and_kls(policy, batch: PolicyBatch, state) -> tuple[float, float, float]:
    """(surrogate loss, KL(old||new), KL(new||old)) of ``policy`` loaded with ``state``."""
    policy.load_state_dict(state)
    with torch.no_grad():
        new = policy(batch.observations)
        d = policy.distribution
        ratio = torch.exp(d.log_prob(new, batch.actions) - batch.old_log_prob)
        return (
            float(-(ratio * batch.advantages).mean()),
            float(d.kl(batch.old_params, new).mean()),
            float(d.kl(new, batch.old_params).mean()),
        )


def our_agent(env_id: str, seed: int, **overrides: Any) -> rl.TRPO:
    with quiet_mujoco_deprecations():
        config = rl.TRPOConfig.from_preset(
            env_id, source="zoo", seed=seed, torch_threads=1, **overrides
        )
        return rl.TRPO(config)


def our_policy_step(
    env_id, seed, fvp, policy_state, data, **overrides
) -> tuple[dict, Any, PolicyBatch]:
    """Our TrustRegionOptimizer step from ``policy_state`` on sb3's batch."""
    agent = our_agent(env_id, seed, fvp=fvp, **overrides)
    agent.policy.load_state_dict(policy_state)
    adv = agent._normalize_advantages(data["advantages"])
    with torch.no_grad():
        old = agent.policy(data["observations"])
    batch = PolicyBatch(data["observations"], data["actions"], adv, old, data["log_probs"])
    params = None if fvp == "hessian" else agent._policy_parameters
    result = agent.policy_optimizer.step(
        make_policy_closure(agent.policy, batch, params), num_samples=len(adv)
    )
    return {k: v.detach().clone() for k, v in agent.policy.state_dict().items()}, result, batch


def policy_step_rows(p, agent, batch, start, finals: dict[str, tuple[dict, int, str]]) -> None:
    """Step direction, size, KLs, improvements of each final policy state vs sb3's."""
    policy = agent.policy
    policy.load_state_dict(start)
    loss = make_policy_closure(policy, batch)()[0]
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(policy.parameters()))])
    theta0 = flat(start, policy)
    loss0 = surrogate_and_kls(policy, batch, start)[0]
    d_sb3 = flat(finals["sb3"][0], policy) - theta0
    for name, (state, backtracks, note) in finals.items():
        d = flat(state, policy) - theta0
        loss1, kl_on, kl_no = surrogate_and_kls(policy, batch, state)
        row(
            p, f"{name}: backtracks / step fraction {note}", f"{backtracks} / {0.8**backtracks:.3f}"
        )
        row(p, f"{name}: KL(old||new) / KL(new||old)", f"{kl_on:.4g} / {kl_no:.4g}")
        row(
            p,
            f"{name}: surrogate improvement / linear prediction -g.dtheta",
            f"{loss0 - loss1:.4g} / {float(-grad @ d):.4g}",
        )
        if name != "sb3":
            row(
                p,
                f"{name} vs sb3: cosine(dtheta) / |dtheta| ratio ours/sb3",
                f"{cosine(d, d_sb3):.6f} / {float(d.norm() / d_sb3.norm()):.4f}",
            )
    policy.load_state_dict(start)


def init_rows(env_id: str, seed: int, sb3_policy) -> None:
    """Singular values and biases of each library's own initial weights."""
    agent = our_agent(env_id, seed)
    gains = {"network.0": 2**0.5, "network.2": 2**0.5, "network.4": None}
    for what, ours, pairs, out_gain in (
        ("policy", agent.policy, POLICY_PAIRS, 0.01),
        ("value", agent.value, VALUE_PAIRS, 1.0),
    ):
        theirs = sb3_state(sb3_policy, pairs, False)
        mine = dict(ours.named_parameters())
        for name, gain in gains.items():
            gain = gain or out_gain
            sv = [torch.linalg.svdvals(s[f"{name}.weight"].detach()) for s in (theirs, mine)]
            bias = [float(s[f"{name}.bias"].abs().max()) for s in (theirs, mine)]
            row(
                "3 init",
                f"{what} {name} (gain {gain:.3g}): max|sv-gain| sb3 / ours; max|bias|",
                f"{float((sv[0] - gain).abs().max()):.1e} / "
                f"{float((sv[1] - gain).abs().max()):.1e}; "
                f"{bias[0]:.0f} / {bias[1]:.0f}",
            )
    row(
        "3 init",
        "log_std sb3 / ours",
        f"{float(sb3_policy.log_std.abs().max()):.0f} / "
        f"{float(agent.policy.distribution.log_std.abs().max()):.0f}",
    )


def compare_update(env_id: str, seed: int) -> None:
    model = sb3_rollout(env_id, seed)
    init_rows(env_id, seed, model.policy)
    policy_start = sb3_state(model.policy, POLICY_PAIRS, True)
    value_start = sb3_state(model.policy, VALUE_PAIRS, False)
    data = buffer_batch(model.rollout_buffer)
    epochs, minibatch = model.n_critic_updates, model.batch_size
    generator_seed = seed + 1
    shuffle = torch.Generator().manual_seed(generator_seed)
    orders = [
        torch.randperm(len(data["returns"]), generator=shuffle).numpy() for _ in range(epochs)
    ]
    counter = [0]
    torch.manual_seed(seed)  # sb3's CG starts from 1e-4 * randn
    with patched_sb3(orders, counter):
        model.train()
    logged = model.logger.name_to_value
    sb3_success = bool(logged["train/is_line_search_success"])
    sb3_backtracks = counter[0] - 2 if sb3_success else counter[0] - 1
    finals = {
        "sb3": (
            sb3_state(model.policy, POLICY_PAIRS, True),
            sb3_backtracks,
            "" if sb3_success else "(rejected)",
        )
    }
    p = "3 policy step"
    batch = None
    config = our_agent(env_id, seed).config
    dims = int(np.prod(model.action_space.shape))  # sb3's Gaussian KL is a mean over these too
    # The presets state the zoo's target_kl and cg_damping times the action dimension (our
    # KL sums over it, sb3's averages); the last variant takes the zoo's numbers unscaled,
    # as the presets did before: a trust region `dims` times smaller.
    variants = {
        "ours preset, fvp=auto": ("auto", {}),
        "ours preset, fvp=hessian": ("hessian", {}),
        f"ours hessian, the zoo's max_kl and damping unscaled (/{dims})": (
            "hessian",
            dict(max_kl=config.max_kl / dims, damping=config.damping / dims),
        ),
    }
    for name, (fvp, overrides) in variants.items():
        state, result, batch = our_policy_step(env_id, seed, fvp, policy_start, data, **overrides)
        finals[name] = (state, result.backtracks, "" if result.accepted else "(rejected)")
        row(
            p,
            f"{name}: mode / CG products / CG residual",
            f"{result.fvp} / {result.cg_iterations} / {result.cg_residual:.2g}",
        )
    sb3_kl_sum = surrogate_and_kls(our_agent(env_id, seed).policy, batch, finals["sb3"][0])[2]
    row(
        p,
        f"sb3 logged KL x action dims ({dims}) / KL(new||old) summed over dims",
        f"{logged['train/kl_divergence_loss'] * dims:.5g} / {sb3_kl_sum:.5g}",
    )
    agent = our_agent(env_id, seed)
    agent.policy.load_state_dict(policy_start)
    with torch.no_grad():
        ours_logp = agent.policy.distribution.log_prob(
            agent.policy(data["observations"]), data["actions"]
        )
    row(
        p,
        "batch size (sb3 buffer) / old log-prob max abs diff (sb3 stored vs ours)",
        f"{len(data['returns'])} / {float((ours_logp - data['log_probs']).abs().max()):.2g}",
    )
    a = data["advantages"]
    sb3_adv = (a - a.mean()) / (a.std() + 1e-8)
    row(
        p,
        "normalized advantages: max abs diff",
        float((agent._normalize_advantages(a) - sb3_adv).abs().max()),
    )
    row(
        p,
        "sb3's own log: KL(new||old) / new surrogate objective",
        f"{logged['train/kl_divergence_loss']:.4g} / {logged['train/policy_objective']:.4g}",
    )
    policy_step_rows(p, agent, batch, policy_start, finals)
    value_rows(env_id, seed, model, value_start, data, orders, generator_seed, epochs, minibatch)


def value_rows(env_id, seed, model, value_start, data, orders, generator_seed, epochs, minibatch):
    """sb3's critic loop (already run by ``model.train``) vs ``fit_value``, same order."""
    p = "4 value fit"
    agent = our_agent(env_id, seed)
    sb3_eps = model.policy.optimizer.defaults["eps"]
    ours_eps = agent.value_optimizer.defaults["eps"]
    row(
        p,
        "Adam lr / eps: sb3 vs ours",
        f"{model.policy.optimizer.defaults['lr']:g} / {sb3_eps:g} vs "
        f"{agent.value_optimizer.defaults['lr']:g} / {ours_eps:g}",
    )
    row(
        p,
        "epochs x minibatch: sb3 vs ours",
        f"{epochs} x {minibatch} vs "
        f"{agent.config.value.epochs} x {agent.config.value.minibatch_size}",
    )
    value = agent.value
    sb3_final = flat(sb3_state(model.policy, VALUE_PAIRS, False), value)
    obs, returns = data["observations"], data["returns"]

    def mse(state) -> float:
        value.load_state_dict(state)
        with torch.no_grad():
            return float(((value(obs) - returns) ** 2).mean())

    row(p, "loss before fit (both)", mse(value_start))
    row(
        p,
        "sb3: loss after fit / |dw|",
        f"{mse(sb3_state(model.policy, VALUE_PAIRS, False)):.5g} / "
        f"{float((sb3_final - flat(value_start, value)).norm()):.4g}",
    )
    for eps in (ours_eps, sb3_eps):
        value.load_state_dict(value_start)
        optimizer = torch.optim.Adam(
            value.parameters(), lr=agent.config.value.learning_rate, eps=eps
        )
        fit_value(
            value,
            optimizer,
            obs,
            returns,
            agent.config.value.epochs,
            agent.config.value.minibatch_size,
            torch.Generator().manual_seed(generator_seed),
        )
        mine = {k: v.detach().clone() for k, v in value.state_dict().items()}
        d = flat(mine, value) - sb3_final
        row(
            p,
            f"ours eps={eps:g}: loss after fit / max abs diff of weights vs sb3 (rel)",
            f"{mse(mine):.5g} / {float(d.abs().max()):.3g} "
            f"({float(d.norm() / sb3_final.norm()):.2g})",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stream-steps", type=int, default=2500, help="per env, for piece 1")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    compare_normalization(args.env, args.seed, args.stream_steps)
    compare_gae(args.seed)
    compare_update(args.env, args.seed)
    print(f"## {args.env}, seed {args.seed}\n\n| piece | quantity | value |\n|---|---|---|")
    for piece, quantity, value in ROWS:
        quantity, value = (text.replace("|", "\\|") for text in (quantity, value))
        print(f"| {piece} | {quantity} | {value} |")


if __name__ == "__main__":
    main()
