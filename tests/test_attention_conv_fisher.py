"""Curvature products and steps on attention, LayerNorm and convolutions.

The reference Fisher is built from first derivatives only: the Jacobian of every output
position from ``torch.autograd.functional.jacobian`` and the categorical output Hessian
``diag(p) − ppᵀ`` written out, ``F = (1/(B·T)) Σ Jᵀ H J``. It involves neither double
backward nor the kernels the optimizer picks, so it is independent of both product forms.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trust_region import (
    GGNClosureResult,
    TrustRegionOptimizer,
    categorical_fisher_vp,
    functional_model,
    ggn_vector_product,
    hessian_vector_product,
)
from trust_region.curvature import flatten, unflatten
from trust_region.kernels import twice_differentiable

VOCAB, WIDTH, HEADS, LENGTH, BATCH = 5, 8, 2, 4, 3


class TinyCausalLM(nn.Module):
    """Embedding, one stock pre-norm ``nn.TransformerEncoderLayer`` with a causal mask, a
    final LayerNorm and a linear read-out: tokens ``(B, T)`` -> logits ``(B, T, V)``."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.position = nn.Parameter(0.3 * torch.randn(LENGTH, WIDTH))
        self.block = nn.TransformerEncoderLayer(
            WIDTH, HEADS, 2 * WIDTH, dropout=0.0, batch_first=True, norm_first=True
        )
        self.norm = nn.LayerNorm(WIDTH)
        self.read_out = nn.Linear(WIDTH, VOCAB)

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(length, dtype=self.position.dtype)
        hidden = self.embed(tokens) + self.position[:length]
        hidden = self.block(hidden, src_mask=mask, is_causal=True)
        return self.read_out(self.norm(hidden))


class TinyCNN(nn.Module):
    """Two convolutions (the second strided), GroupNorm, pooling: images -> logits ``(B, V)``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(2, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.Tanh(),
            nn.Conv2d(4, 4, 3, stride=2), nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )  # fmt: skip
        self.classifier = nn.Linear(16, VOCAB)

    def forward(self, images: Tensor) -> Tensor:
        return self.classifier(self.features(images))


def make_case(name: str, dtype: torch.dtype = torch.float64) -> tuple[nn.Module, Tensor, int]:
    """A seeded model, its inputs and ``positions_per_sample``."""
    torch.manual_seed(0)
    if name.startswith("transformer"):
        model = TinyCausalLM().to(dtype)
        inputs, positions = torch.randint(0, VOCAB, (BATCH, LENGTH)), LENGTH
    else:
        model = TinyCNN().to(dtype)
        inputs, positions = torch.randn(BATCH, 2, 7, 7, dtype=dtype), 1
    model.train(name.endswith("train"))
    return model, inputs, positions


def categorical_kl(old_logits: Tensor, new_logits: Tensor) -> Tensor:
    """Mean over every position of KL(softmax(old) ‖ softmax(new))."""
    old_log_probs = old_logits.log_softmax(-1)
    return (old_log_probs.exp() * (old_log_probs - new_logits.log_softmax(-1))).sum(-1).mean()


def explicit_fisher(model: nn.Module, inputs: Tensor) -> Tensor:
    """``(1/positions) Σ Jᵀ (diag(p) − ppᵀ) J`` from the Jacobian of the flattened logits."""
    params = list(model.parameters())
    model_fn = functional_model(model, params)

    def flat_logits(flat: Tensor) -> Tensor:
        return model_fn(unflatten(flat, params), inputs).reshape(-1, VOCAB)

    flat = flatten([p.detach() for p in params])
    with torch.no_grad():
        probs = flat_logits(flat).softmax(-1)  # (positions, V)
    jacobian = torch.autograd.functional.jacobian(flat_logits, flat)  # (positions, V, P)
    output_hessian = torch.diag_embed(probs) - probs[:, :, None] * probs[:, None, :]
    fisher = torch.einsum("nap,nab,nbq->pq", jacobian, output_hessian, jacobian)
    return fisher / len(probs)


def ggn_product(model: nn.Module, inputs: Tensor, positions: int, index: Tensor | None = None):
    params = list(model.parameters())
    model_fn = functional_model(model, params)
    used = len(inputs) if index is None else len(index)
    return ggn_vector_product(
        lambda ps, idx: model_fn(ps, inputs if idx is None else inputs[idx]),
        categorical_fisher_vp, params, index, used * positions,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["transformer-eval", "transformer-train", "cnn"])
def test_ggn_and_hessian_products_equal_the_explicit_fisher(name: str) -> None:
    model, inputs, positions = make_case(name)
    fisher = explicit_fisher(model, inputs)
    params = list(model.parameters())
    with torch.no_grad():
        old = model(inputs)
    with twice_differentiable():
        hvp = hessian_vector_product(categorical_kl(old, model(inputs)), params)
    ggn = ggn_product(model, inputs, positions)
    for seed in range(2):
        v = torch.randn(fisher.shape[0], generator=torch.Generator().manual_seed(seed))
        expected = fisher @ v.to(fisher.dtype)
        torch.testing.assert_close(ggn(v.to(fisher.dtype)), expected, rtol=1e-7, atol=1e-10)
        torch.testing.assert_close(hvp(v.to(fisher.dtype)), expected, rtol=1e-7, atol=1e-10)


def test_subsampled_sequences_give_the_fisher_of_those_sequences() -> None:
    model, inputs, positions = make_case("transformer-eval")
    index = torch.tensor([0, 2])
    expected_fisher = explicit_fisher(model, inputs[index])
    v = torch.randn(expected_fisher.shape[0], generator=torch.Generator().manual_seed(3))
    v = v.to(expected_fisher.dtype)
    got = ggn_product(model, inputs, positions, index)(v)
    torch.testing.assert_close(got, expected_fisher @ v, rtol=1e-7, atol=1e-10)


def make_closure(model: nn.Module, tokens: Tensor, targets: Tensor, ggn: bool, positions: int):
    with torch.no_grad():
        old = model(tokens)
    model_fn = functional_model(model, list(model.parameters()))

    def closure():
        logits = model(tokens)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
        kl = categorical_kl(old, logits)
        if not ggn:
            return loss, kl
        return GGNClosureResult(
            loss, kl, lambda ps, idx: model_fn(ps, tokens if idx is None else tokens[idx]),
            categorical_fisher_vp, len(tokens), positions_per_sample=positions,
        )  # fmt: skip

    return closure


@pytest.mark.parametrize("ggn", [False, True], ids=["tuple", "ggn"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_stock_transformer_steps_stay_inside_max_kl_in_float32(ggn: bool, mode: str) -> None:
    model, tokens, positions = make_case(f"transformer-{mode}", torch.float32)
    targets = torch.randint(0, VOCAB, tokens.shape, generator=torch.Generator().manual_seed(1))
    max_kl = 0.01
    opt = TrustRegionOptimizer(model.parameters(), max_kl=max_kl, cg_iters=15)
    losses = []
    for _ in range(4):
        result = opt.step(make_closure(model, tokens, targets, ggn, positions))
        assert result.accepted, result.reason
        assert 0.0 < result.kl <= max_kl * (1 + 1e-6)
        assert result.loss_after < result.loss_before
        losses.append(result.loss_after)
    assert losses[-1] < losses[0]
    assert result.fvp == ("ggn" if ggn else "hessian")


def test_a_sequence_kl_without_positions_per_sample_is_refused_with_parameters_unchanged():
    model, tokens, _ = make_case("transformer-eval", torch.float32)
    targets = torch.zeros_like(tokens)
    before = [p.detach().clone() for p in model.parameters()]
    opt = TrustRegionOptimizer(model.parameters(), max_kl=0.01)
    closure = make_closure(model, tokens, targets, ggn=True, positions=1)  # should be LENGTH
    with pytest.raises(ValueError, match="positions_per_sample=1") as error:
        opt.step(closure)
    assert "num_samples=3" in str(error.value)
    for p, original in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, original)


@pytest.mark.parametrize("field, value", [("num_samples", 0), ("positions_per_sample", 0),
                                          ("positions_per_sample", 2.5)])  # fmt: skip
def test_bad_sample_counts_name_the_field(field: str, value) -> None:
    counts = {"num_samples": 4, "positions_per_sample": 1, field: value}
    with pytest.raises(ValueError, match=f"{field} must be an integer >= 1"):
        GGNClosureResult(
            torch.zeros(()), torch.zeros(()), lambda ps, i: ps, categorical_fisher_vp, **counts
        )


def float32_kl_closure(model: nn.Module, inputs: Tensor, targets: Tensor, positions: int):
    """The Gauss-Newton closure with the loss and KL computed from float32 logits (what a
    bfloat16/float16 model wants: the KL's rounding would otherwise be ~max_kl/10)."""
    with torch.no_grad():
        old = model(inputs).float()
    model_fn = functional_model(model, list(model.parameters()))

    def closure() -> GGNClosureResult:
        logits = model(inputs).float()
        return GGNClosureResult(
            F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1)),
            categorical_kl(old, logits),
            lambda ps, idx: model_fn(ps, inputs if idx is None else inputs[idx]),
            categorical_fisher_vp, len(inputs), positions_per_sample=positions,
        )  # fmt: skip

    return closure


def half_precision_step(name: str, dtype: torch.dtype, solve_dtype: torch.dtype | None):
    """One step from the same start in ``dtype``: (result, step as float64, CG vector dtypes)."""
    model, inputs, positions = make_case(name)  # float64 weights, cast below
    model = model.to(dtype).eval()
    inputs = inputs.to(dtype) if inputs.is_floating_point() else inputs
    shape = inputs.shape[:2] if name.startswith("transformer") else inputs.shape[:1]
    targets = torch.randint(0, VOCAB, shape, generator=torch.Generator().manual_seed(1))
    seen: set[torch.dtype] = set()

    def identity_preconditioner(residual: Tensor) -> Tensor:
        seen.add(residual.dtype)
        return residual

    before = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    opt = TrustRegionOptimizer(
        model.parameters(), max_kl=0.01, damping=0.01, cg_iters=20,
        preconditioner=identity_preconditioner, solve_dtype=solve_dtype,
    )  # fmt: skip
    result = opt.step(float32_kl_closure(model, inputs, targets, positions))
    assert all(p.dtype == dtype for p in model.parameters())
    after = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    return result, after - before, seen


@pytest.mark.parametrize("name", ["transformer-eval", "cnn"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_models_step_inside_max_kl_with_a_float32_solve(name, dtype) -> None:
    reference = half_precision_step(name, torch.float64, None)[1]
    result, step, solve_dtypes = half_precision_step(name, dtype, torch.float32)
    assert solve_dtypes == {torch.float32}
    assert result.accepted and 0.0 < result.kl <= 0.01 * (1 + 1e-6)
    # Measured: cosine 0.996 (bfloat16) and 0.998 (float16) on the transformer, >= 0.997 on
    # the CNN; lengths within 1% of the float64 step.
    cosine = float(step @ reference) / float(step.norm() * reference.norm())
    assert cosine > 0.99
    assert abs(float(step.norm() / reference.norm()) - 1.0) < 0.05


@pytest.mark.parametrize("bad", [torch.int32, "float32", torch.bool])
def test_a_bad_solve_dtype_is_refused_naming_it(bad) -> None:
    with pytest.raises(ValueError, match="Invalid solve_dtype"):
        TrustRegionOptimizer([nn.Parameter(torch.zeros(2))], solve_dtype=bad)
