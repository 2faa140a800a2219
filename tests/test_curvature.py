"""Fisher-vector products against explicit Hessians from torch.autograd.functional."""

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from trust_region import (
    bernoulli_fisher_vp,
    categorical_fisher_vp,
    diag_gaussian_fisher_vp,
    functional_model,
    ggn_vector_product,
    hessian_vector_product,
)
from trust_region.curvature import flatten, unflatten

N, IN, OUT = 24, 5, 3


@pytest.fixture(autouse=True)
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


class GaussianHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(IN, 7), nn.Tanh(), nn.Linear(7, OUT))
        self.log_std = nn.Parameter(torch.linspace(-0.5, 0.3, OUT))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean = self.body(x)
        return mean, self.log_std.expand_as(mean)


def gaussian_kl(old: tuple[Tensor, Tensor], new: tuple[Tensor, Tensor]) -> Tensor:
    (mean0, log_std0), (mean1, log_std1) = old, new
    var0, var1 = torch.exp(2 * log_std0), torch.exp(2 * log_std1)
    return (log_std1 - log_std0 + (var0 + (mean0 - mean1) ** 2) / (2 * var1) - 0.5).sum(-1)


def categorical_kl(old: Tensor, new: Tensor) -> Tensor:
    return (old.softmax(-1) * (old.log_softmax(-1) - new.log_softmax(-1))).sum(-1)


def bernoulli_kl(old: Tensor, new: Tensor) -> Tensor:
    p = torch.sigmoid(old)
    log_p1, log_p0 = nn.functional.logsigmoid(new), nn.functional.logsigmoid(-new)
    return (p * (torch.log(p) - log_p1) + (1 - p) * (torch.log(1 - p) - log_p0)).sum(-1)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(IN, 7), nn.Tanh(), nn.Linear(7, OUT))


CASES: dict[str, tuple[Callable[[], nn.Module], Callable, Callable]] = {
    "gaussian": (GaussianHead, gaussian_kl, diag_gaussian_fisher_vp),
    "categorical": (mlp, categorical_kl, categorical_fisher_vp),
    "bernoulli": (mlp, bernoulli_kl, bernoulli_fisher_vp),
}


def explicit_fisher(model: nn.Module, x: Tensor, kl_fn: Callable) -> Tensor:
    """Hessian of the mean KL at the current parameters, built entry by entry."""
    params = list(model.parameters())
    fn = functional_model(model, params)
    with torch.no_grad():
        old = model(x)
    shapes = [p.shape for p in params]

    def mean_kl(flat: Tensor) -> Tensor:
        values = unflatten(flat, [torch.empty(s) for s in shapes])
        return kl_fn(old, fn(values, x)).mean()

    return torch.autograd.functional.hessian(mean_kl, flatten([p.detach() for p in params]))


@pytest.mark.parametrize("case", sorted(CASES))
def test_hessian_and_ggn_products_match_explicit_fisher(case: str) -> None:
    torch.manual_seed(0)
    make_model, kl_fn, output_fisher_vp = CASES[case]
    model = make_model()
    x = torch.randn(N, IN)
    params = list(model.parameters())
    fisher = explicit_fisher(model, x, kl_fn)
    assert torch.linalg.eigvalsh(fisher).min() > -1e-10  # PSD, as a metric must be

    with torch.no_grad():
        old = model(x)
    hvp = hessian_vector_product(kl_fn(old, model(x)).mean(), params)
    fn = functional_model(model, params)
    ggn = ggn_vector_product(
        lambda ps, idx: fn(ps, x if idx is None else x[idx]), output_fisher_vp, params, None, N
    )
    for seed in range(3):
        v = torch.randn(fisher.shape[0], generator=torch.Generator().manual_seed(seed))
        expected = fisher @ v
        torch.testing.assert_close(hvp(v), expected, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(ggn(v), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("case", ["gaussian", "categorical"])
def test_subsampled_ggn_is_the_fisher_of_the_subsample(case: str) -> None:
    torch.manual_seed(1)
    make_model, kl_fn, output_fisher_vp = CASES[case]
    model = make_model()
    x = torch.randn(N, IN)
    index = torch.tensor([0, 3, 4, 9, 17])
    fisher_subset = explicit_fisher(model, x[index], kl_fn)
    params = list(model.parameters())
    fn = functional_model(model, params)
    ggn = ggn_vector_product(
        lambda ps, idx: fn(ps, x if idx is None else x[idx]),
        output_fisher_vp,
        params,
        index,
        len(index),
    )
    v = torch.randn(fisher_subset.shape[0], generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(ggn(v), fisher_subset @ v, rtol=1e-6, atol=1e-8)


def test_functional_model_refuses_foreign_parameters() -> None:
    with pytest.raises(ValueError, match="not part of the module"):
        functional_model(mlp(), [nn.Parameter(torch.zeros(2))])
