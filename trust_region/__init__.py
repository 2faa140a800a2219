"""trust_region: KL-constrained (natural-gradient) updates as a PyTorch optimizer.

Depends on torch alone. The public API:

- :class:`TrustRegionOptimizer` (``step(closure) -> StepResult``) and :class:`StepResult`.
- What a closure may return for the faster Gauss-Newton products: :class:`GGNClosureResult`,
  built with :func:`functional_model`, and the output-space KL Hessians
  :func:`categorical_fisher_vp`, :func:`bernoulli_fisher_vp`, :func:`diag_gaussian_fisher_vp`;
  with a :class:`LinearHead` the last layer is solved exactly (``fvp="ggn-head"``).
- Sequence outputs: ``GGNClosureResult(..., num_samples=B, positions_per_sample=T)`` for
  logits ``(B, T, V)`` whose KL is averaged over ``B·T`` positions. Half precision:
  ``TrustRegionOptimizer(..., solve_dtype=torch.float32)`` runs CG and the step in float32.
- :func:`twice_differentiable`: the context (math attention kernel) under which ``step``
  runs the forwards it differentiates twice, so stock transformer layers work; use it
  around a KL handed to :func:`hessian_vector_product` outside the optimizer.
- The kernels, usable alone: :func:`conjugate_gradient` / :func:`conjugate_gradient_solve`
  (:class:`CGResult`), :func:`hessian_vector_product`, :func:`ggn_vector_product`,
  :func:`linear_head_solve`, :func:`linear_head_fisher_product`.

Example:
    >>> from trust_region import TrustRegionOptimizer
    >>> opt = TrustRegionOptimizer(model.parameters(), max_kl=0.01)  # doctest: +SKIP
    >>> result = opt.step(closure)  # closure() -> (loss, mean KL(old || new))  # doctest: +SKIP
"""

from .cg import CGResult, conjugate_gradient, conjugate_gradient_solve
from .curvature import (
    GGNClosureResult,
    bernoulli_fisher_vp,
    categorical_fisher_vp,
    diag_gaussian_fisher_vp,
    functional_model,
    ggn_vector_product,
    hessian_vector_product,
)
from .head import LinearHead, linear_head_fisher_product, linear_head_solve
from .kernels import twice_differentiable
from .optimizer import StepResult, TrustRegionOptimizer

__all__ = [
    "CGResult",
    "GGNClosureResult",
    "LinearHead",
    "StepResult",
    "TrustRegionOptimizer",
    "bernoulli_fisher_vp",
    "categorical_fisher_vp",
    "conjugate_gradient",
    "conjugate_gradient_solve",
    "diag_gaussian_fisher_vp",
    "functional_model",
    "ggn_vector_product",
    "hessian_vector_product",
    "linear_head_fisher_product",
    "linear_head_solve",
    "twice_differentiable",
]

__version__ = "0.1.0"
