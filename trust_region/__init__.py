"""trust_region: KL-constrained (natural-gradient) updates as a PyTorch optimizer.

Depends on torch alone. The public API:

- :class:`TrustRegionOptimizer` (``step(closure) -> StepResult``) and :class:`StepResult`.
- What a closure may return for the faster Gauss-Newton products: :class:`GGNClosureResult`,
  built with :func:`functional_model`, and the output-space KL Hessians
  :func:`categorical_fisher_vp`, :func:`bernoulli_fisher_vp`, :func:`diag_gaussian_fisher_vp`;
  with a :class:`LinearHead` the last layer is solved exactly (``fvp="ggn-head"``).
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
]

__version__ = "0.1.0"
