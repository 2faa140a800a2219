"""TrustRegionOptimizer: a KL-constrained natural-gradient step for any model."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .cg import CGResult, conjugate_gradient_solve
from .closure import (
    check_ggn_scale,
    check_kl_at_start,
    resolve_fvp,
    subsample_index,
    unpack,
)
from .curvature import (
    GGNClosureResult,
    flat_grad,
    ggn_vector_product,
    hessian_vector_product,
)
from .distributed import WeightedReducer, broadcast_parameters, open_step
from .head import HeadInputs, check_linear_head, head_inputs, linear_head_solve
from .kernels import twice_differentiable
from .line_search import StepResult, backtracking_line_search
from .settings import FVP_MODES as FVP_MODES  # re-exported: defined here before
from .settings import STEP_SCALINGS as STEP_SCALINGS
from .settings import is_int, validate, validate_solve_dtype

__all__ = ["StepResult", "TrustRegionOptimizer"]

ClosureOutput = tuple[Tensor, Tensor] | GGNClosureResult
Closure = Callable[[], ClosureOutput]

# Settings that must agree between param groups: they define one joint solve.
JOINT_SETTINGS = (
    "max_kl",
    "cg_iters",
    "cg_tol",
    "backtrack_iters",
    "backtrack_coeff",
    "accept_ratio",
    "fvp",
    "fvp_subsample",
    "step_scaling",
)


class TrustRegionOptimizer(Optimizer):
    r"""Trust-region (natural-gradient) step under a KL constraint, for any model.

    Each :meth:`step` solves ``(F + D) s = −g`` by conjugate gradient, where ``g`` is the
    gradient of the closure's loss, ``F`` the Hessian of its KL (the Fisher metric) and
    ``D`` the damping, scales ``s`` so that ``½ sᵀ(F + D)s = max_kl`` (or ``½ sᵀFs = max_kl``
    with ``step_scaling="fisher"``), then tries
    ``θ + cᵏ s`` for ``k = 0 … backtrack_iters`` (``c = backtrack_coeff``). A candidate is
    accepted only when its loss and KL are finite, ``KL ≤ max_kl`` (as measured by the
    closure) and the loss decreased by at least ``accept_ratio`` times the linear prediction
    ``−cᵏ gᵀs``. When none is accepted the parameters are restored bit for bit.

    The closure computes, with autograd on (``step`` enables it), the loss to *minimise* and
    the mean KL(old ‖ new), where "old" is whatever the caller holds fixed (detached) and
    "new" depends on the current parameters; so at the starting point the KL is 0 with zero
    gradient and its Hessian is the Fisher matrix. The closure must **not** call
    ``backward`` and must be **deterministic** (modules in eval mode, no dropout): it is
    called once to linearise and once per line-search candidate. It returns ``(loss, kl)``
    or, to enable the faster Gauss-Newton products, a :class:`GGNClosureResult`.

    When that result carries a :class:`LinearHead` (outputs linear in the last layer, with a
    constant diagonal output-space KL Hessian, e.g. a Gaussian policy with a
    state-independent std), "auto" and "ggn-head" solve the last layer (and the
    constant-curvature parameters such as the log-std) exactly and run CG on the Schur
    complement over the other parameters: ``cg_iters`` then counts those products, each as
    costly as a Gauss-Newton product, and far fewer reach the same accuracy. ``fvp_subsample``
    applies to it too (the whole structure is taken on the subsample); a ``preconditioner``
    does not (ValueError).

    The solve options and what they do to the step (all solve the same damped system; they
    differ in cost and, when CG stops early, in accuracy):

    - ``fvp="hessian"``: CG on double-backward products of the KL (any closure). With
      ``cg_iters`` below what the system needs, truncated CG from zero returns a step biased
      towards the gradient's large-curvature directions.
    - ``fvp="ggn"``: CG on Gauss-Newton products ``JᵀHJ`` of the whole model; the same matrix
      as "hessian" at the starting point for the KLs of exponential-family outputs, so the
      same step to rounding, in about half the time per product.
    - ``fvp="ggn-head"``: the linear head and the constant-curvature parameters solved
      exactly, CG on the rest; reaches CG's tolerance in a few products where plain CG needs
      tens. Measured on TRPO policies (docs/learning_ablation.md): the same step as plain CG
      at 25 iterations to a cosine of 0.9996 or better.
    - ``fvp="auto"``: "ggn-head" when the closure describes a linear head, else "ggn" when it
      returns a :class:`GGNClosureResult`, else "hessian".

    ``step_scaling`` decides what ``max_kl`` bounds in the quadratic model: "damped" (the
    default, as TRPO's reference implementations do) scales with ``sᵀ(F + D)s``, so damping
    spends part of the radius and the KL reached is below ``max_kl`` (on MuJoCo policies
    about half of it); "fisher" scales with ``sᵀFs``, so the predicted KL is ``max_kl``
    itself. The line search's ``KL ≤ max_kl`` check applies in both.

    Args:
        params (iterable): tensors or param-group dicts, as for any ``torch.optim`` optimizer.
        max_kl (float, optional): trust-region radius, > 0 (default: 0.01).
        damping (float, optional): ``λ`` added to ``F``'s diagonal, ≥ 0; may differ per
            group (default: 0.1).
        cg_iters (int, optional): conjugate-gradient iterations, ≥ 1 (default: 10).
        backtrack_iters (int, optional): line-search shrinks, ≥ 0 (default: 10).
        backtrack_coeff (float, optional): shrink factor, in (0, 1) (default: 0.8).
        accept_ratio (float, optional): minimum actual/predicted improvement, ≥ 0
            (default: 0.1).
        fvp (str, optional): "hessian" (double backward of the KL, any closure), "ggn"
            (Gauss-Newton products, needs a :class:`GGNClosureResult`), "ggn-head" (the
            head-eliminated solve, needs the result's ``linear_head``) or "auto" (the first
            of ggn-head, ggn, hessian that the closure allows) (default: "auto").
        fvp_subsample (float, optional): fraction of the batch used for Fisher products, in
            (0, 1]; below 1 it needs a :class:`GGNClosureResult` (default: 1.0).
        preconditioner (callable, optional): ``r -> M⁻¹ r`` for an SPD approximation ``M``
            of the damped Fisher, used by conjugate gradient; kept on the optimizer, not in
            the param groups (default: None, plain CG).
        cg_tol (float, optional): conjugate gradient stops once ``‖r‖²`` falls below it, ≥ 0
            (default: 1e-10).
        step_scaling (str, optional): "damped" (``½ sᵀ(F + D)s = max_kl``) or "fisher"
            (``½ sᵀFs = max_kl``, falling back to the damped scale when ``sᵀFs`` is not
            positive) (default: "damped").
        solve_dtype (torch.dtype, optional): the dtype of the gradient, the conjugate-gradient
            vectors and the step. With a bfloat16/float16 model, ``torch.float32`` keeps CG's
            dot products and the step's scaling accurate: each Fisher product runs in the
            model's dtype on a vector cast to it and comes back cast to ``solve_dtype``; the
            parameters keep their dtype (default: None, the parameters' dtype).
        process_group (ProcessGroup, optional): ``torch.distributed`` group whose ranks
            each hold part of the batch. Gradients, Fisher products and the line search's
            loss/KL are averaged over the ranks (weighted by sample count), so every rank
            takes the identical step; parameters are broadcast from the group's rank 0 at
            construction (default: None, a single process).
        sync_check_every (int, optional): with a ``process_group``, compare a parameter
            checksum across ranks every this many steps and raise if they drifted apart;
            0 disables it (default: 100).

    Example:
        >>> opt = TrustRegionOptimizer(model.parameters(), max_kl=0.01)
        >>> old_logits = model(x).detach()
        >>> def closure():
        ...     logits = model(x)
        ...     kl = (old_logits.softmax(-1) * (old_logits.log_softmax(-1)
        ...           - logits.log_softmax(-1))).sum(-1).mean()
        ...     return F.cross_entropy(logits, y), kl
        >>> result = opt.step(closure)
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        max_kl: float = 0.01,
        damping: float = 0.1,
        cg_iters: int = 10,
        backtrack_iters: int = 10,
        backtrack_coeff: float = 0.8,
        accept_ratio: float = 0.1,
        fvp: str = "auto",
        fvp_subsample: float = 1.0,
        preconditioner: Callable[[Tensor], Tensor] | None = None,
        cg_tol: float = 1e-10,
        step_scaling: str = "damped",
        process_group: Any = None,
        sync_check_every: int = 100,
        solve_dtype: torch.dtype | None = None,
    ) -> None:
        defaults = dict(
            max_kl=max_kl,
            damping=damping,
            cg_iters=cg_iters,
            backtrack_iters=backtrack_iters,
            backtrack_coeff=backtrack_coeff,
            accept_ratio=accept_ratio,
            fvp=fvp,
            fvp_subsample=fvp_subsample,
            cg_tol=cg_tol,
            step_scaling=step_scaling,
        )
        validate(defaults)
        super().__init__(params, defaults)
        self.preconditioner = preconditioner
        validate_solve_dtype(solve_dtype)
        self.solve_dtype = solve_dtype
        if not is_int(sync_check_every) or sync_check_every < 0:
            raise ValueError(f"Invalid sync_check_every: {sync_check_every!r} (must be >= 0)")
        self.process_group = process_group
        self.sync_check_every = sync_check_every
        broadcast_parameters(self._params(), process_group)
        for group in self.param_groups:
            validate(group)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Fill settings added since an older ``state_dict`` was saved with their defaults."""
        super().__setstate__(state)
        self.__dict__.setdefault("solve_dtype", None)
        for group in self.param_groups:
            group.setdefault("step_scaling", "damped")

    # ------------------------------------------------------------------ settings
    def _joint_settings(self) -> dict[str, Any]:
        first = self.param_groups[0]
        for index, group in enumerate(self.param_groups):
            validate(group)
            for key in JOINT_SETTINGS:
                if group[key] != first[key]:
                    raise ValueError(
                        f"param group {index} has {key}={group[key]!r} but group 0 has "
                        f"{first[key]!r}: all groups form one joint trust-region solve and must "
                        f"agree on {', '.join(JOINT_SETTINGS)} (damping may differ)"
                    )
        return {key: first[key] for key in JOINT_SETTINGS}

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    def _damping_vector(self, like: Tensor) -> Tensor | float:
        dampings = [g["damping"] for g in self.param_groups]
        if all(d == dampings[0] for d in dampings):
            return float(dampings[0])
        pieces = [
            torch.full((p.numel(),), float(g["damping"]), dtype=like.dtype, device=like.device)
            for g in self.param_groups
            for p in g["params"]
            if p.requires_grad
        ]
        return torch.cat(pieces)

    # ---------------------------------------------------------------------- step
    @torch.no_grad()
    def step(  # type: ignore[override]
        self, closure: Closure, num_samples: int | None = None
    ) -> StepResult:
        """Take one trust-region step; see the class docstring.

        Args:
            closure (callable): returns ``(loss, kl)`` scalar tensors or a
                :class:`GGNClosureResult`; must not call ``backward``.
            num_samples (int, optional): this rank's batch size, the weight of its loss, KL
                and Fisher in the average over ranks (only used with a ``process_group``;
                default: the closure result's ``num_samples``, else equal weights).

        Returns:
            StepResult: what happened; the parameters moved only if ``accepted``.
        """
        if closure is None:
            raise TypeError("TrustRegionOptimizer.step needs a closure returning (loss, kl)")
        settings = self._joint_settings()
        params = self._params()
        if not params:
            raise ValueError("TrustRegionOptimizer has no parameter that requires grad")
        global_state = self.state[params[0]]
        global_state["step"] = global_state.get("step", 0) + 1

        with torch.enable_grad(), twice_differentiable():
            loss, kl, ggn = unpack(closure())
        mode = resolve_fvp(settings["fvp"], ggn, settings["fvp_subsample"])
        terms = ggn.num_samples * ggn.positions_per_sample if ggn else 1
        weight = num_samples if num_samples is not None else terms
        every = self.sync_check_every
        check = params if every and (global_state["step"] - 1) % every == 0 else []
        reducer, loss_before = open_step(self.process_group, weight, loss, check)

        def reject(reason: str, **extra: Any) -> StepResult:
            fields: dict[str, Any] = dict(
                accepted=False, loss_before=loss_before, loss_after=loss_before, kl=0.0,
                expected_improvement=0.0, step_fraction=0.0, backtracks=0, cg_iterations=0,
                cg_residual=0.0, reason=reason, fvp=mode, grad_norm=float("nan"),
            )  # fmt: skip
            fields.update(extra)
            return StepResult(**fields)

        if not math.isfinite(loss_before):
            return reject("non-finite loss")

        with torch.enable_grad():
            local_grad = flat_grad(loss, params, retain_graph=True)
            if global_state["step"] == 1:
                check_kl_at_start(kl, params, local_grad)
            if mode == "ggn-head" and not global_state.get("linear_head_checked", False):
                assert ggn is not None and ggn.linear_head is not None
                check_linear_head(ggn.linear_head, kl, params, ggn.num_samples)
                global_state["linear_head_checked"] = True
        if mode != "hessian":  # only Hessian products differentiate the KL's graph again:
            # free it (the batch's saved activations) before the solve and the line search
            loss, kl = loss.detach(), kl.detach()
            ggn = replace(ggn, loss=loss, kl=kl) if ggn is not None else None
        if mode == "ggn" and not global_state.get("ggn_scale_checked", False):
            assert ggn is not None
            check_ggn_scale(closure, ggn, params)  # moves and restores the parameters
            global_state["ggn_scale_checked"] = True
        head = self._head_inputs(mode, settings, ggn)  # its A reduced with the gradient
        if head is None:
            loss_grad = reducer.mean(local_grad)
        else:
            loss_grad, gram = reducer.means(local_grad, head.gram)
            head = replace(head, gram=gram)
        loss_grad = loss_grad.to(self.solve_dtype or local_grad.dtype)
        grad_norm = float(loss_grad.norm())
        if not math.isfinite(grad_norm):
            return reject("non-finite gradient", grad_norm=grad_norm)
        if grad_norm == 0.0:
            return reject("zero gradient", grad_norm=grad_norm)
        if float(loss_grad @ loss_grad) <= settings["cg_tol"]:
            residual = float(loss_grad @ loss_grad)
            return reject("gradient below cg_tol", cg_residual=residual, grad_norm=grad_norm)

        with torch.enable_grad(), twice_differentiable():
            solve = self._solve(mode, settings, kl, ggn, params, -loss_grad, reducer, head)
        direction = solve.solution
        cg_info = dict(
            cg_iterations=solve.iterations, cg_residual=solve.residual, grad_norm=grad_norm
        )
        curvature = self._step_curvature(settings["step_scaling"], direction, -loss_grad, solve)
        if not (math.isfinite(curvature) and curvature > 0.0):
            return reject("non-finite step", **cg_info)
        full_step = direction * math.sqrt(2.0 * settings["max_kl"] / curvature)
        expected_improvement = float(-(loss_grad @ full_step))
        if not (math.isfinite(expected_improvement) and expected_improvement > 0.0):
            return reject("no descent direction", **cg_info)

        return backtracking_line_search(
            closure, params, full_step, loss_before, expected_improvement, settings, mode,
            cg_info, reducer,
        )  # fmt: skip

    def _step_curvature(
        self, scaling: str, direction: Tensor, rhs: Tensor, solve: CGResult
    ) -> float:
        """``sᵀ(F + D)s`` ("damped") or ``sᵀFs`` ("fisher") for the solve's direction ``s``.

        For CG started at 0, ``(F + D)s = b − r`` exactly up to rounding, so neither needs
        another Fisher product.
        """
        damped = float(direction @ (rhs - solve.residual_vector))
        if scaling == "damped":
            return damped
        damping = self._damping_vector(direction)
        fisher = damped - float(direction @ (damping * direction))
        return fisher if math.isfinite(fisher) and fisher > 0.0 else damped

    def _solve(
        self,
        mode: str,
        settings: dict[str, Any],
        kl: Tensor,
        ggn: GGNClosureResult | None,
        params: list[Tensor],
        rhs: Tensor,
        reducer: WeightedReducer,
        head: HeadInputs | None,
    ) -> CGResult:
        """``(F + D) s = rhs`` by conjugate gradient, on all of ``F`` or its Schur complement
        (``head``: the head's inputs, reduced, in "ggn-head" mode)."""
        damping = self._damping_vector(rhs)
        if head is not None:
            assert ggn is not None and ggn.linear_head is not None
            result = linear_head_solve(
                ggn.linear_head, params, rhs.to(params[0].dtype), damping, settings["cg_iters"],
                settings["cg_tol"], reduce=reducer.mean, reduced=head,
            )  # fmt: skip
            return replace(  # the head's algebra runs in the parameters' dtype
                result, solution=result.solution.to(rhs.dtype),
                residual_vector=result.residual_vector.to(rhs.dtype),
            )  # fmt: skip
        fisher_product = self._curvature(mode, settings, kl, ggn, params)

        product_dtype = params[0].dtype if self.solve_dtype else rhs.dtype

        def damped_product(vector: Tensor) -> Tensor:
            product = reducer.mean(fisher_product(vector.to(product_dtype)))
            return product.to(vector.dtype) + damping * vector

        return conjugate_gradient_solve(
            damped_product, rhs, settings["cg_iters"], settings["cg_tol"], self.preconditioner
        )

    def _head_inputs(
        self, mode: str, settings: dict[str, Any], ggn: GGNClosureResult | None
    ) -> HeadInputs | None:
        """In "ggn-head" mode, the head's local inputs on the Fisher's samples (else None)."""
        if mode != "ggn-head":
            return None
        assert ggn is not None and ggn.linear_head is not None
        if self.preconditioner is not None:
            raise ValueError(
                "a preconditioner acts on all parameters, but with a closure that returns "
                "a linear_head the optimizer runs CG on the non-head parameters only: "
                "drop the preconditioner, or the linear_head (or use fvp='hessian')"
            )
        device = ggn.loss.device
        index = subsample_index(ggn.num_samples, settings["fvp_subsample"], device)
        rows = ggn.num_samples if index is None else len(index)
        with torch.enable_grad(), twice_differentiable():
            return head_inputs(ggn.linear_head, index, rows)

    def _curvature(
        self,
        mode: str,
        settings: dict[str, Any],
        kl: Tensor,
        ggn: GGNClosureResult | None,
        params: list[Tensor],
    ) -> Callable[[Tensor], Tensor]:
        if mode == "hessian":
            with torch.enable_grad():
                return hessian_vector_product(kl, params)
        assert ggn is not None
        index = subsample_index(ggn.num_samples, settings["fvp_subsample"], kl.device)
        used = ggn.num_samples if index is None else len(index)
        terms = used * ggn.positions_per_sample
        return ggn_vector_product(ggn.outputs_fn, ggn.output_fisher_vp, params, index, terms)
