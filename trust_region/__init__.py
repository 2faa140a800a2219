"""trust_region: KL-constrained (natural-gradient) updates as a PyTorch optimizer.

Depends on torch alone. The public API::

    from trust_region import TrustRegionOptimizer, StepResult, conjugate_gradient
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
