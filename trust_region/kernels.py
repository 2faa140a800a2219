"""The kernels under which the optimizer runs forwards whose graphs it differentiates twice.

Curvature products differentiate a forward pass twice: the KL's Hessian-vector product
(``fvp="hessian"``) back-propagates through ``∇KL``, and the Gauss-Newton product
(``fvp="ggn"``) differentiates the saved ``u -> Jᵀu`` with respect to ``u``. torch's fused
scaled-dot-product attention kernels (flash attention on CPU and GPU, memory-efficient
attention on GPU) have backward passes that cannot themselves be differentiated
(``derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward is not
implemented``), and ``nn.MultiheadAttention``, ``nn.TransformerEncoderLayer`` and
``F.scaled_dot_product_attention`` pick them by default. Under :func:`twice_differentiable`
attention takes its math path (matmul, softmax, matmul: the same function, composed of
twice-differentiable operations), so models built from the stock transformer layers work
unchanged.

``nn.TransformerEncoderLayer``'s eval-mode fast path (``torch._transformer_encoder_layer_fwd``)
has no backward at all, but torch only takes it when no gradient is needed (grad disabled or
no parameter requiring grad), which is never the case in the forwards differentiated here; the
line search's candidates, evaluated without grad, may take it, which changes nothing but speed.
"""

from __future__ import annotations

import contextlib

__all__ = ["twice_differentiable"]

try:  # torch >= 2.3
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # pragma: no cover - older torch: no fused CPU kernel to avoid either
    SDPBackend = sdpa_kernel = None  # type: ignore[assignment, misc]


def twice_differentiable() -> contextlib.AbstractContextManager[None]:
    """Context in which attention runs on kernels that can be differentiated twice.

    Example:
        >>> with twice_differentiable():  # doctest: +SKIP
        ...     kl = closure()[1]  # a KL whose Hessian-vector products will be taken
    """
    if sdpa_kernel is None:
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])
