"""The value fit's fast path (rl.value.MinibatchStepper) against the plain autograd loop.

The fast path writes the MLP's backward pass and Adam's update out by hand; it must give
the numbers of ``loss.backward(); Adam.step()`` exactly, so the reference here is that
loop, written independently, and the comparisons are ``torch.equal``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rl.config import ValueConfig
from rl.value import MinibatchStepper, ValueNetwork, fit_value, make_value


def reference_fit(value, optimizer, observations, returns, epochs, minibatch_size, generator):
    """rl's value fit as autograd and torch.optim run it, one minibatch at a time."""
    losses = []
    for _ in range(epochs):
        losses = []
        order = torch.randperm(returns.shape[0], generator=generator)
        for start in range(0, returns.shape[0], minibatch_size):
            index = order[start : start + minibatch_size]
            loss = (value(observations[index]) - returns[index]).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
    return float(torch.stack(losses).mean())


def problem(dtype: torch.dtype, samples: int = 1000, obs_dim: int = 11):
    generator = torch.Generator().manual_seed(3)
    observations = torch.randn(samples, obs_dim, generator=generator, dtype=dtype)
    returns = (observations[:, :3].sum(1) * 4 + torch.randn(samples, generator=generator)).to(dtype)
    return observations, returns


def assert_same_state(first: torch.optim.Optimizer, second: torch.optim.Optimizer) -> None:
    one, two = first.state_dict()["state"], second.state_dict()["state"]
    assert one.keys() == two.keys() and one
    for key in one:
        assert one[key].keys() == two[key].keys()
        for name in one[key]:
            assert torch.equal(one[key][name], two[key][name]), (key, name)


def twins(value: nn.Module, make_optimizer) -> tuple:
    other = copy.deepcopy(value)
    return (value, make_optimizer(value)), (other, make_optimizer(other))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("hidden", [(64, 64), (32,), ()])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_fit_is_bit_identical_to_autograd_and_adam(activation, hidden, dtype) -> None:
    torch.manual_seed(0)
    observations, returns = problem(dtype)
    value = make_value(
        observations.shape[1], ValueConfig(hidden_sizes=hidden, activation=activation)
    )
    value = value.to(dtype)
    (fast, fast_optimizer), (slow, slow_optimizer) = twins(
        value, lambda v: torch.optim.Adam(v.parameters(), lr=1e-2)
    )
    stepper = MinibatchStepper(fast, fast_optimizer)
    assert stepper.fast
    # float32: the whole fit runs as one TorchScript call (float64 steps in Python)
    assert stepper.scripted == (dtype == torch.float32)
    fast_generator, slow_generator = (
        torch.Generator().manual_seed(1),
        torch.Generator().manual_seed(1),
    )
    losses = []
    for epochs, minibatch_size in ((3, 128), (2, 1000), (4, 77)):  # 1000 = 7·128 + 104
        got = fit_value(fast, fast_optimizer, observations, returns, epochs, minibatch_size,
                        fast_generator)  # fmt: skip
        want = reference_fit(slow, slow_optimizer, observations, returns, epochs,
                             minibatch_size, slow_generator)  # fmt: skip
        assert got == want
        losses.append(got)
        for a, b in zip(fast.parameters(), slow.parameters(), strict=True):
            assert torch.equal(a, b)
        assert_same_state(fast_optimizer, slow_optimizer)
    assert losses[-1] < 0.8 * losses[0]  # and it did learn


def test_fast_fit_continues_a_loaded_optimizer_state_exactly() -> None:
    """A resumed run loads Adam's state (steps, moments) and goes on with the fast path."""
    torch.manual_seed(1)
    observations, returns = problem(torch.float32)
    value = make_value(observations.shape[1], ValueConfig())
    optimizer = torch.optim.Adam(value.parameters(), lr=1e-3)
    reference_fit(value, optimizer, observations, returns, 2, 128, torch.Generator().manual_seed(0))
    saved_value, saved_optimizer = copy.deepcopy(value.state_dict()), optimizer.state_dict()

    resumed = make_value(observations.shape[1], ValueConfig())
    resumed.load_state_dict(saved_value)
    resumed_optimizer = torch.optim.Adam(resumed.parameters(), lr=1e-3)
    resumed_optimizer.load_state_dict(copy.deepcopy(saved_optimizer))
    fit_value(resumed, resumed_optimizer, observations, returns, 3, 128,
              torch.Generator().manual_seed(5))  # fmt: skip
    reference_fit(value, optimizer, observations, returns, 3, 128,
                  torch.Generator().manual_seed(5))  # fmt: skip
    for a, b in zip(resumed.parameters(), value.parameters(), strict=True):
        assert torch.equal(a, b)
    assert_same_state(resumed_optimizer, optimizer)
    assert float(resumed_optimizer.state_dict()["state"][0]["step"]) == 2 * 8 + 3 * 8


class Odd(nn.Module):
    """A value network the fast path does not know: falls back to autograd."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(11, 16)
        self.head = nn.Linear(16, 1)
        self.unused = nn.Parameter(torch.ones(3))  # never gets a gradient

    def forward(self, x):
        return self.head(torch.tanh(self.body(x))).squeeze(-1)


@pytest.mark.parametrize(
    ("make_network", "make_optimizer", "fast"),
    [
        (lambda: make_value(11, ValueConfig(activation="elu")),
         lambda p: torch.optim.Adam(p, lr=1e-3), False),
        (lambda: make_value(11, ValueConfig()), lambda p: torch.optim.SGD(p, lr=1e-2), False),
        (lambda: make_value(11, ValueConfig()),
         lambda p: torch.optim.Adam(p, lr=1e-3, amsgrad=True), False),
        (lambda: make_value(11, ValueConfig()),
         lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=0.1), False),
        (lambda: make_value(11, ValueConfig()),
         lambda p: torch.optim.Adam(p, lr=1e-3, betas=(0.5, 0.9), eps=1e-5), True),
        (Odd, lambda p: torch.optim.Adam(p, lr=1e-3), False),
    ],
)  # fmt: skip
def test_other_networks_and_optimizers_give_the_reference_numbers(
    make_network, make_optimizer, fast
) -> None:
    torch.manual_seed(2)
    observations, returns = problem(torch.float32)
    (one, one_optimizer), (two, two_optimizer) = twins(
        make_network(), lambda v: make_optimizer(v.parameters())
    )
    stepper = MinibatchStepper(one, one_optimizer)
    assert stepper.fast is fast
    got = fit_value(one, one_optimizer, observations, returns, 2, 100,
                    torch.Generator().manual_seed(4))  # fmt: skip
    want = reference_fit(two, two_optimizer, observations, returns, 2, 100,
                         torch.Generator().manual_seed(4))  # fmt: skip
    assert got == want
    for a, b in zip(one.parameters(), two.parameters(), strict=True):
        assert torch.equal(a, b)
    if isinstance(one, Odd):  # an unused parameter is left alone, as Adam leaves it
        assert torch.equal(one.unused, torch.ones(3))
        assert one.unused not in one_optimizer.state


def test_fast_path_needs_a_value_network_with_one_output() -> None:
    bare = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))  # returns (B, 1)
    assert not MinibatchStepper(bare, torch.optim.Adam(bare.parameters())).fast
    wide = ValueNetwork(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)))
    assert not MinibatchStepper(wide, torch.optim.Adam(wide.parameters())).fast
    frozen = make_value(4, ValueConfig())
    frozen.network[0].bias.requires_grad_(False)
    assert not MinibatchStepper(frozen, torch.optim.Adam(frozen.parameters())).fast


def test_a_fit_that_overflows_is_undone_on_the_fast_path() -> None:
    value = make_value(3, ValueConfig())
    optimizer = torch.optim.Adam(value.parameters(), lr=1e-3)
    assert MinibatchStepper(value, optimizer).fast
    before = [p.detach().clone() for p in value.parameters()]
    observations = torch.full((64, 3), 3e38)
    returns = torch.full((64,), 3e38)
    with torch.no_grad():  # finite inputs whose squared error overflows float32
        loss = fit_value(value, optimizer, observations, returns, 2, 16)
    assert loss != loss  # NaN
    for a, b in zip(value.parameters(), before, strict=True):
        assert torch.equal(a, b)
    assert optimizer.state_dict()["state"] == {}


def test_without_torchscript_the_python_fast_path_gives_the_same_numbers(monkeypatch) -> None:
    import rl.value

    monkeypatch.setattr(rl.value, "_SCRIPTED", [None])  # as where TorchScript is gone
    torch.manual_seed(4)
    observations, returns = problem(torch.float32)
    (one, one_optimizer), (two, two_optimizer) = twins(
        make_value(observations.shape[1], ValueConfig()),
        lambda v: torch.optim.Adam(v.parameters(), lr=1e-3),
    )
    stepper = MinibatchStepper(one, one_optimizer)
    assert stepper.fast and not stepper.scripted
    for seed in range(2):
        got = fit_value(one, one_optimizer, observations, returns, 3, 128,
                        torch.Generator().manual_seed(seed))  # fmt: skip
        want = reference_fit(two, two_optimizer, observations, returns, 3, 128,
                             torch.Generator().manual_seed(seed))  # fmt: skip
        assert got == want
    for a, b in zip(one.parameters(), two.parameters(), strict=True):
        assert torch.equal(a, b)
    assert_same_state(one_optimizer, two_optimizer)


def test_an_adam_state_the_fast_path_does_not_keep_falls_back_to_adam() -> None:
    """Step counts that differ between parameters (e.g. a state loaded from elsewhere):
    neither the scripted fit nor the replica run; Adam.step does, with the same numbers."""
    torch.manual_seed(5)
    observations, returns = problem(torch.float32)
    (one, one_optimizer), (two, two_optimizer) = twins(
        make_value(observations.shape[1], ValueConfig()),
        lambda v: torch.optim.Adam(v.parameters(), lr=1e-3),
    )
    for model, optimizer in ((one, one_optimizer), (two, two_optimizer)):
        reference_fit(model, optimizer, observations, returns, 1, 500,
                      torch.Generator().manual_seed(0))  # fmt: skip
        optimizer.state[next(iter(model.parameters()))]["step"] += 3.0  # out of step
    stepper = MinibatchStepper(one, one_optimizer)
    assert not stepper.can_run_scripted(observations, returns, 16)
    got = fit_value(one, one_optimizer, observations, returns, 2, 128,
                    torch.Generator().manual_seed(1))  # fmt: skip
    want = reference_fit(two, two_optimizer, observations, returns, 2, 128,
                         torch.Generator().manual_seed(1))  # fmt: skip
    assert got == want
    for a, b in zip(one.parameters(), two.parameters(), strict=True):
        assert torch.equal(a, b)
    assert_same_state(one_optimizer, two_optimizer)
