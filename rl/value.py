"""The value function: an MLP ``V(s)`` fitted to λ-returns by minibatch Adam."""

from __future__ import annotations

import copy
import math
import os
import queue
import threading
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from rl.config import ValueConfig
from rl.networks import mlp

__all__ = [
    "BackgroundCall",
    "ForegroundCall",
    "ValueNetwork",
    "explained_variance",
    "fit_value",
    "make_value",
]


class ValueNetwork(nn.Module):
    """``(B, obs_dim) -> (B,)``: an MLP with one output, squeezed."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, observations: Tensor) -> Tensor:
        return self.network(observations).squeeze(-1)


def make_value(obs_dim: int, config: ValueConfig) -> ValueNetwork:
    """The MLP value network described by ``config`` (output layer gain 1, as SB3)."""
    return ValueNetwork(mlp(obs_dim, config.hidden_sizes, 1, config.activation, True, 1.0))


def fit_value(
    value: nn.Module,
    optimizer: torch.optim.Optimizer,
    observations: Tensor,
    returns: Tensor,
    epochs: int,
    minibatch_size: int,
    generator: torch.Generator | None = None,
) -> float:
    """Regress ``value(observations)`` on ``returns`` by ``epochs`` shuffled minibatch passes.

    Minimises ``mean((V(s) − R)²)`` with ``optimizer``; a last minibatch smaller than
    ``minibatch_size`` is kept.

    Args:
        value (nn.Module): ``(B, obs_dim) -> (B,)``.
        optimizer (Optimizer): over ``value``'s parameters (e.g. Adam).
        observations (Tensor): ``(M, obs_dim)``.
        returns (Tensor): ``(M,)`` regression targets.
        epochs (int): passes over the data.
        minibatch_size (int): samples per optimizer step.
        generator (torch.Generator, optional): shuffling randomness.

    A fit that leaves a parameter NaN or infinite (finite but huge observations or returns
    can overflow float32) is undone: the parameters and the optimizer's state are restored.

    For what ``make_value`` builds (an MLP with tanh or ReLU) under a plain
    ``torch.optim.Adam``, the minibatch steps run through :class:`MinibatchStepper`'s fast
    path: the same arithmetic as autograd and ``Adam.step`` (bit for bit, tested), in a
    third of the time. Any other network or optimizer takes the autograd path.

    Returns:
        float: the mean minibatch loss of the last epoch; NaN if the fit was undone.
    """
    saved_parameters = [p.detach().clone() for p in value.parameters()]
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    stepper = MinibatchStepper(value, optimizer)
    num_samples = returns.shape[0]
    losses: list[Tensor] = []
    steps = epochs * math.ceil(num_samples / minibatch_size)
    if stepper.can_run_scripted(observations, returns, steps):
        orders = [
            torch.randperm(num_samples, generator=generator).to(returns.device)
            for _ in range(epochs)
        ]
        losses = stepper.run_scripted(observations, returns, orders, minibatch_size, steps)
        epochs = 0  # done
    for epoch in range(epochs):
        losses = []
        want_loss = epoch == epochs - 1
        order = torch.randperm(num_samples, generator=generator).to(returns.device)
        for start in range(0, num_samples, minibatch_size):
            # a fresh gather per minibatch (not slices of one shuffled copy): BLAS results
            # can depend on the alignment of their inputs
            index = order[start : start + minibatch_size]
            gradients, loss = stepper.gradients(observations[index], returns[index], want_loss)
            stepper.step(gradients)
            if want_loss:
                losses.append(loss)
    return finish_fit(value, optimizer, saved_parameters, saved_optimizer, losses)


def finish_fit(
    value: nn.Module,
    optimizer: torch.optim.Optimizer,
    saved_parameters: list[Tensor],
    saved_optimizer: dict[str, Any],
    losses: list[Tensor],
) -> float:
    """The end of a value fit: undo it (parameters and optimizer state back to the saved
    ones) if it left a parameter NaN or infinite and return NaN; else the mean of the last
    epoch's minibatch ``losses``."""
    if not all(bool(torch.isfinite(p).all()) for p in value.parameters()):
        with torch.no_grad():
            for parameter, saved in zip(value.parameters(), saved_parameters, strict=True):
                parameter.copy_(saved)
        optimizer.load_state_dict(saved_optimizer)
        return float("nan")
    return float(torch.stack(losses).mean()) if losses else float("nan")


class MinibatchStepper:
    """One minibatch of the value regression: the gradient of ``mean((V(x) − y)²)`` and
    the optimizer's step on it, for ``fit_value`` and its data-parallel twin.

    The value fit is hundreds of tiny steps per iteration (RL Zoo: 20 epochs × 16
    minibatches of 128), so its cost is per-call overhead, not arithmetic. For an
    ``nn.Sequential`` MLP of ``nn.Linear`` layers with tanh or ReLU between them and one
    output, wrapped in ``ValueNetwork`` (what ``make_value`` builds), the fast path
    writes the backward pass out (the matrix products autograd runs, into preallocated
    buffers), and for a ``torch.optim.Adam`` with one parameter group and no weight decay,
    AMSGrad, maximize, capturable, differentiable or fused mode it runs Adam's
    single-tensor update (what ``Adam.step`` does on CPU) as a handful of ``_foreach``
    calls. Both give the numbers of the autograd path exactly (tests compare the
    parameters and the optimizer state with ``torch.equal`` after whole fits), at about a
    third of its cost. Anything else takes the autograd path: ``loss.backward()`` and
    ``optimizer.step()``.

    Args:
        value (nn.Module): ``(B, obs_dim) -> (B,)``.
        optimizer (Optimizer): over ``value``'s parameters.
    """

    def __init__(self, value: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.value = value
        self.optimizer = optimizer
        self.parameters = [p for p in value.parameters() if p.requires_grad]
        self._layers = _plain_mlp_layers(value)
        # views of the live weights (updated in place), as F.linear's addmm takes them
        self._transposed = [weight.t() for weight, _, _ in self._layers or ()]
        self._adam = _ExactAdam.of(optimizer, self.parameters)
        self._buffers: list[Tensor] | None = None
        self._flat: Tensor | None = None  # the last ``out`` buffer and its views
        self._flat_views: list[Tensor] = []

    @property
    def fast(self) -> bool:
        """Whether both the backward pass and the optimizer step take the fast path."""
        return self._layers is not None and self._adam is not None

    def accepts(self, observations: Tensor, returns: Tensor) -> bool:
        """Whether the fast path's backward pass applies to this data: ``(B, obs_dim)``
        observations and ``(B,)`` returns of the parameters' dtype."""
        if self._layers is None:
            return False
        dtype = self._layers[0][0].dtype
        return (
            observations.dim() == 2
            and returns.dim() == 1
            and observations.dtype == dtype
            and returns.dtype == dtype
        )

    @property
    def scripted(self) -> bool:
        """Whether ``run_scripted`` can run the whole fit: the fast path, float32 on CPU,
        with TorchScript available (see ``scripted_fit``). Not float64: TorchScript's
        ``addmm`` rounds differently from eager's there (seen in a test), and the
        scripted fit must give the eager numbers."""
        return (
            self.fast
            and all(p.device.type == "cpu" and p.dtype == torch.float32 for p in self.parameters)
            and scripted_fit() is not None
        )

    def can_run_scripted(self, observations: Tensor, returns: Tensor, num_steps: int) -> bool:
        """Whether ``run_scripted`` takes a fit of ``num_steps`` steps on this data: scripted,
        data the fast path accepts, an Adam state it keeps, step counts float32 holds."""
        if not (self.scripted and self.accepts(observations, returns) and num_steps > 0):
            return False
        adam = self._adam
        assert adam is not None
        return adam.state() is not None and adam.step_count + num_steps < 2**24

    def run_scripted(
        self,
        observations: Tensor,
        returns: Tensor,
        orders: list[Tensor],
        minibatch_size: int,
        num_steps: int,
    ) -> list[Tensor]:
        """Every minibatch step of a fit (one shuffled ``order`` per epoch) in one call
        of the TorchScript function ``scripted_fit()``, which runs without holding
        Python's GIL; the same operations as ``gradients`` and ``step``. Returns the last
        epoch's minibatch losses."""
        function, layers, adam = scripted_fit(), self._layers, self._adam
        assert function is not None and layers is not None and adam is not None
        state = adam.state()
        if state is None or adam.step_count + num_steps >= 2**24:
            raise RuntimeError("run_scripted needs can_run_scripted(...) to be True")
        steps, exp_avgs, exp_avg_sqs = state
        group = adam.group
        beta1, beta2 = group["betas"]
        with torch.no_grad():
            losses = function(
                observations,
                returns,
                orders,
                minibatch_size,
                [weight for weight, _, _ in layers],
                [bias for _, bias, _ in layers],
                [_ACTIVATION_CODES[activation] for _, _, activation in layers],
                exp_avgs,
                exp_avg_sqs,
                adam.step_count,
                float(group["lr"]),
                float(beta1),
                float(beta2),
                float(group["eps"]),
            )
            # Adam adds 1 to each float32 step count per step; exact below 2**24.
            torch._foreach_add_(steps, float(num_steps))
            adam.step_count += num_steps
        return losses

    def gradients(
        self,
        observations: Tensor,
        returns: Tensor,
        want_loss: bool = True,
        out: Tensor | None = None,
    ) -> tuple[list[Tensor | None], Tensor | None]:
        """The gradient of the minibatch's mean squared error, one tensor per parameter
        (in ``value.parameters()`` order), and the loss (None when not ``want_loss`` on the
        fast path). With ``out`` (a flat buffer of at least the parameters' total size) the
        gradients are views into it."""
        if self._layers is None or not self.accepts(observations, returns):
            loss = (self.value(observations) - returns).pow(2).mean()
            grads = torch.autograd.grad(loss, self.parameters, allow_unused=True)
            if out is None:  # None for an unused parameter: Adam leaves it alone
                return list(grads), loss.detach()
            filled = [
                torch.zeros_like(p) if g is None else g
                for g, p in zip(grads, self.parameters, strict=True)
            ]
            return self._into(out, filled), loss.detach()
        buffers = self._out_views(out) if out is not None else self._own_buffers()
        with torch.no_grad():
            return buffers, self._mlp_backward(observations, returns, want_loss, buffers)

    def step(self, gradients: list[Tensor | None]) -> None:
        """The optimizer's step with ``gradients`` (as returned by ``gradients``)."""
        if self._adam is not None and all(g is not None for g in gradients):
            self._adam.step(gradients)
            return
        for parameter, gradient in zip(self.parameters, gradients, strict=True):
            parameter.grad = gradient
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def views(self, flat: Tensor) -> list[Tensor]:
        """One view per parameter, shaped like it, into the flat buffer ``flat``."""
        views, offset = [], 0
        for parameter in self.parameters:
            views.append(flat[offset : offset + parameter.numel()].view_as(parameter))
            offset += parameter.numel()
        return views

    # ------------------------------------------------------------------------- internals
    def _own_buffers(self) -> list[Tensor]:
        if self._buffers is None:
            self._buffers = [torch.empty_like(p) for p in self.parameters]
        return self._buffers

    def _out_views(self, flat: Tensor) -> list[Tensor]:
        if self._flat is not flat:
            self._flat, self._flat_views = flat, self.views(flat)
        return self._flat_views

    def _into(self, flat: Tensor, gradients: list[Tensor]) -> list[Tensor]:
        views = self._out_views(flat)
        for view, gradient in zip(views, gradients, strict=True):
            view.copy_(gradient)
        return views

    def _mlp_backward(
        self, x: Tensor, y: Tensor, want_loss: bool, gradients: list[Tensor]
    ) -> Tensor | None:
        """Forward and backward of the plain MLP, as autograd computes them: ``addmm``
        per layer, the activation's own backward kernel, ``mm`` and ``sum`` for the weight
        and bias gradients (``gradients`` is written in place)."""
        layers = self._layers
        assert layers is not None
        inputs = [x]
        for index, (_, bias, activation) in enumerate(layers):
            x = torch.addmm(bias, x, self._transposed[index])
            if activation is not None:
                x = activation(x)
            if index < len(layers) - 1:
                inputs.append(x)
        difference = x.squeeze(-1) - y
        loss = difference.pow(2).mean() if want_loss else None
        # d mean(d²)/d out = 2 d / B, in (B, 1): what autograd's pow and mean backward give.
        grad = (difference * (2.0 / difference.shape[0])).unsqueeze(-1)
        for index in range(len(layers) - 1, -1, -1):
            weight, _, _ = layers[index]
            torch.mm(grad.t(), inputs[index], out=gradients[2 * index])
            torch.sum(grad, 0, out=gradients[2 * index + 1])
            if index > 0:
                activation = layers[index - 1][2]
                grad = _ACTIVATION_BACKWARD[activation](torch.mm(grad, weight), inputs[index])
        return loss


def _plain_mlp_layers(
    value: nn.Module,
) -> list[tuple[Tensor, Tensor, Callable[[Tensor], Tensor] | None]] | None:
    """``[(weight, bias, activation after it), ...]`` when ``value`` is a ``ValueNetwork``
    wrapping an ``nn.Sequential`` of biased ``nn.Linear`` layers with tanh/ReLU between them
    and one output, every parameter trainable and in that order; else None."""
    network = value.network if isinstance(value, ValueNetwork) else value
    if not isinstance(network, nn.Sequential) or len(network) == 0:
        return None
    layers: list[tuple[Tensor, Tensor, Callable[[Tensor], Tensor] | None]] = []
    expect_linear = True
    for module in network:
        if expect_linear:
            if type(module) is not nn.Linear or module.bias is None:
                return None
            layers.append((module.weight, module.bias, None))
        else:
            activation = _ACTIVATIONS.get(type(module))
            if activation is None:
                return None
            weight, bias, _ = layers[-1]
            layers[-1] = (weight, bias, activation)
        expect_linear = not expect_linear
    weight, _, last_activation = layers[-1]
    if not isinstance(value, ValueNetwork) or last_activation is not None or weight.shape[0] != 1:
        return None
    parameters = [p for layer in layers for p in layer[:2]]
    if not _same_tensors(list(value.parameters()), parameters):
        return None
    if not all(p.requires_grad for p in parameters):
        return None
    return layers


def _same_tensors(first: list[Tensor], second: list[Tensor]) -> bool:
    return len(first) == len(second) and all(a is b for a, b in zip(first, second, strict=True))


_ACTIVATIONS: dict[type, Callable[[Tensor], Tensor]] = {nn.Tanh: torch.tanh, nn.ReLU: torch.relu}
_Activation = Callable[[Tensor], Tensor]
# activation -> (grad of its output, its output) -> grad of its input, autograd's kernels
_ACTIVATION_BACKWARD: dict[_Activation | None, Callable[[Tensor, Tensor], Tensor]] = {
    torch.tanh: torch.ops.aten.tanh_backward.default,
    torch.relu: lambda grad, out: torch.ops.aten.threshold_backward.default(grad, out, 0),
}


_ACTIVATION_CODES: dict[_Activation | None, int] = {None: 0, torch.tanh: 1, torch.relu: 2}


def _mlp_adam_fit(
    observations: Tensor,
    returns: Tensor,
    orders: list[Tensor],
    minibatch_size: int,
    weights: list[Tensor],
    biases: list[Tensor],
    activations: list[int],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    step: float,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> list[Tensor]:
    """A whole value fit, compiled by TorchScript (``scripted_fit``): for each shuffled
    ``order`` (an epoch), minibatch steps of ``MinibatchStepper``'s fast path — the same
    operations in the same order: ``_mlp_backward`` for the gradient, then Adam's
    single-tensor update of each parameter (``weights[i]``, ``biases[i]`` in turn, with
    ``exp_avgs``/``exp_avg_sqs`` in that order). ``activations[i]`` follows layer ``i``: 0
    none, 1 tanh, 2 ReLU. Returns the last epoch's minibatch losses."""
    num_samples = returns.shape[0]
    num_layers = len(weights)
    losses: list[Tensor] = []
    for epoch, order in enumerate(orders):
        last_epoch = epoch == len(orders) - 1
        for start in range(0, num_samples, minibatch_size):
            index = order[start : start + minibatch_size]
            x = observations[index]
            inputs = [x]
            for layer in range(num_layers):
                x = torch.addmm(biases[layer], x, weights[layer].t())
                if activations[layer] == 1:
                    x = torch.tanh(x)
                elif activations[layer] == 2:
                    x = torch.relu(x)
                if layer < num_layers - 1:
                    inputs.append(x)
            difference = x.squeeze(-1) - returns[index]
            if last_epoch:
                losses.append(difference.pow(2).mean())
            grad = (difference * (2.0 / difference.shape[0])).unsqueeze(-1)
            gradients: list[Tensor] = []
            for layer in range(num_layers - 1, -1, -1):
                gradients.append(torch.sum(grad, 0))
                gradients.append(torch.mm(grad.t(), inputs[layer]))
                if layer > 0:
                    grad_input = torch.mm(grad, weights[layer])
                    if activations[layer - 1] == 1:
                        grad = torch.ops.aten.tanh_backward(grad_input, inputs[layer])
                    elif activations[layer - 1] == 2:
                        grad = torch.ops.aten.threshold_backward(grad_input, inputs[layer], 0)
                    else:
                        grad = grad_input
            gradients.reverse()  # [weight 0, bias 0, weight 1, ...], the parameters' order
            step += 1.0
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            step_size = lr / bias_correction1
            bias_correction2_sqrt = bias_correction2**0.5
            for i in range(2 * num_layers):
                parameter = weights[i // 2] if i % 2 == 0 else biases[i // 2]
                gradient = gradients[i]
                exp_avgs[i].lerp_(gradient, 1 - beta1)
                exp_avg_sqs[i].mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
                denominator = (exp_avg_sqs[i].sqrt() / bias_correction2_sqrt).add_(eps)
                parameter.addcdiv_(exp_avgs[i], denominator, value=-step_size)
    return losses


_SCRIPTED: list[Callable[..., list[Tensor]] | None] = []  # [] until first asked for


def scripted_fit() -> Callable[..., list[Tensor]] | None:
    """``_mlp_adam_fit`` compiled by ``torch.jit.script`` (once), or None where TorchScript
    is not available.

    Why TorchScript, which torch 2.13 deprecates: a scripted function runs in C++ without
    Python's GIL, so the value fit can run in a thread beside the next rollout for free
    (measured: rollout 304 ms alone, 306 ms with the fit beside it; the Python fit in a
    thread slows that rollout to 456 ms). torch.compile and torch.export give no GIL-free
    loop. Should TorchScript go, this returns None and the fit takes the Python fast path
    (the same numbers) in the foreground.
    """
    if not _SCRIPTED:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                _SCRIPTED.append(torch.jit.script(_mlp_adam_fit))
        except Exception:  # no TorchScript in this torch: the Python path
            _SCRIPTED.append(None)
    return _SCRIPTED[0]


class _ExactAdam:
    """``torch.optim.Adam``'s single-tensor update on its own state, with one call per
    operation for all parameters (``_foreach`` ops run the same per-tensor kernels on
    CPU). Only built for a plain Adam (see ``MinibatchStepper``)."""

    def __init__(self, optimizer: torch.optim.Adam, parameters: list[Tensor]) -> None:
        self.optimizer = optimizer
        self.parameters = parameters
        self.group = optimizer.param_groups[0]
        self._cached: tuple[list[Tensor], list[Tensor], list[Tensor]] | None = None
        self.step_count = 0.0  # every ``state["step"]`` (float32 counts integers exactly)

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer, parameters: list[Tensor]) -> _ExactAdam | None:
        if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
            return None
        group = optimizer.param_groups[0]
        plain = (
            group.get("weight_decay", 0) == 0
            and not group.get("amsgrad", False)
            and not group.get("maximize", False)
            and not group.get("capturable", False)
            and not group.get("differentiable", False)
            and not group.get("fused", False)
            and not isinstance(group["lr"], Tensor)
            and not any(isinstance(beta, Tensor) for beta in group["betas"])
        )
        if not plain or not parameters or not _same_tensors(list(group["params"]), parameters):
            return None
        if any(p.is_complex() or p.is_sparse for p in parameters):
            return None
        if optimizer._optimizer_step_pre_hooks or optimizer._optimizer_step_post_hooks:
            return None
        return cls(optimizer, parameters)

    def state(self) -> tuple[list[Tensor], list[Tensor], list[Tensor]] | None:
        """``(steps, exp_avgs, exp_avg_sqs)``, created as ``Adam`` creates them on its first
        step; None for a state this replica does not handle (then ``Adam.step`` runs)."""
        if self._cached is not None:
            return self._cached
        states = [self.optimizer.state[p] for p in self.parameters]
        if all(len(state) == 0 for state in states):
            for parameter, state in zip(self.parameters, states, strict=True):
                state["step"] = torch.tensor(0.0, dtype=torch.get_default_dtype(), device="cpu")
                state["exp_avg"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(
                    parameter, memory_format=torch.preserve_format
                )
        elif not all({"step", "exp_avg", "exp_avg_sq"} <= state.keys() for state in states):
            return None
        steps = [state["step"] for state in states]
        if any(step.device.type != "cpu" for step in steps) or len({float(s) for s in steps}) != 1:
            return None
        self.step_count = float(steps[0])
        self._cached = steps, [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]
        return self._cached

    def step(self, gradients: list[Tensor]) -> None:
        """``Adam.step`` with these gradients (the parameters' ``.grad`` is not used)."""
        state = self.state()
        if state is None:  # a state this replica does not keep: let Adam do it
            for parameter, gradient in zip(self.parameters, gradients, strict=True):
                parameter.grad = gradient
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            return
        steps, exp_avgs, exp_avg_sqs = state
        with torch.no_grad():
            self._update(steps, exp_avgs, exp_avg_sqs, gradients)

    def _update(
        self,
        steps: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        gradients: list[Tensor],
    ) -> None:
        group = self.group
        beta1, beta2 = group["betas"]
        lr, eps = group["lr"], group["eps"]
        torch._foreach_add_(steps, 1)
        self.step_count += 1.0
        step = self.step_count if self.step_count < 2**24 else steps[0].item()  # float32 stops
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        torch._foreach_lerp_(exp_avgs, gradients, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, gradients, gradients, 1 - beta2)
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denominators, bias_correction2_sqrt)
        torch._foreach_add_(denominators, eps)
        torch._foreach_addcdiv_(self.parameters, exp_avgs, denominators, -step_size)


def explained_variance(predictions: Tensor, targets: Tensor) -> float:
    """``1 − Var(targets − predictions) / Var(targets)``; NaN when the targets are constant."""
    target_variance = targets.var()
    if target_variance == 0:
        return float("nan")
    return float(1.0 - (targets - predictions).var() / target_variance)


class BackgroundCall:
    """Runs ``fn(*args)`` on rl's background thread at once; ``result()`` waits and
    returns (or raises).

    The TRPO update fits the value function this way while the policy step (and, see
    ``TRPO.learn``, the next rollout) runs: they share no state (the fit has its own
    shuffle generator), so the outcome is bit for bit the one of running them one after
    the other. The thread is started once per process and kept: starting a thread per call
    costs the caller about 4 ms, waiting for the new thread to take the GIL. Calls run one
    after the other, in the order they were made.
    """

    _worker: tuple[int, queue.SimpleQueue[BackgroundCall]] | None = None  # (pid, jobs)

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._fn, self._args = fn, args
        self._result: Any = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._jobs().put(self)

    @classmethod
    def _jobs(cls) -> queue.SimpleQueue[BackgroundCall]:
        """The worker's job queue, the worker started first in this process (a forked
        child does not inherit its parent's thread)."""
        worker = cls._worker
        if worker is None or worker[0] != os.getpid():
            jobs: queue.SimpleQueue[BackgroundCall] = queue.SimpleQueue()
            threading.Thread(
                target=cls._serve, args=(jobs,), name="rl-background", daemon=True
            ).start()
            worker = cls._worker = (os.getpid(), jobs)
        return worker[1]

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[BackgroundCall]) -> None:
        while True:
            jobs.get()._run()

    def _run(self) -> None:
        try:
            self._result = self._fn(*self._args)
        except BaseException as error:  # re-raised in the caller's thread by result()
            self._error = error
        finally:
            self._fn = self._args = None  # type: ignore[assignment]
            self._done.set()

    def result(self) -> Any:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result


class ForegroundCall:
    """``BackgroundCall``'s synchronous stand-in: runs ``fn(*args)`` in the caller's thread."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._result = fn(*args)

    def result(self) -> Any:
        return self._result
