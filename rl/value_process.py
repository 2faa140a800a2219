"""The value fit in a child process, beside the policy step and the next rollout (no GIL
shared with the rollout). Parameters and Adam's state live in shared memory, updated in
place; the numbers are ``rl.value.fit_value``'s bit for bit (same autograd, Adam, threads
and shuffles, drawn by the training process). One child per training process (``spawn``:
no inherited descriptor, lock or thread); it ignores SIGINT/SIGTERM/SIGHUP and exits with
its parent, even after a SIGKILL (checked every second)."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from typing import Any

import torch
import torch.multiprocessing as mp
from torch import Tensor, nn

from rl.signals import StopOnSignals
from rl.value import fit_value, shuffled_orders

__all__ = ["MAX_SHARED_BYTES", "PendingFit", "ValueFitProcess", "can_fit_in_process"]

PARENT_CHECK_SECONDS = 1.0
# A batch larger than this (Atari frames: 8,192 x 4 x 84 x 84 bytes = 231 MB) is fitted in
# a thread of the training process instead: /dev/shm is 64 MB in a default Docker container.
MAX_SHARED_BYTES = 64 * 2**20


def can_fit_in_process(value: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
    """Whether the fit can run in the child: CPU parameters, one ``Adam`` group over them."""
    parameters = list(value.parameters())
    return (
        type(optimizer) is torch.optim.Adam
        and len(optimizer.param_groups) == 1
        and bool(parameters)
        and all(p.device.type == "cpu" for p in parameters)
        and {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in parameters}
    )


class PendingFit:
    """A value fit under way; ``result()`` waits for its last epoch's mean loss (or raises).
    ``apart``: in the child, so it may go on beside the next rollout (a thread would not)."""

    def __init__(
        self,
        loss: float | None = None,
        process: ValueFitProcess | None = None,
        thread: Callable[[], float] | None = None,
    ) -> None:
        self._loss, self._process, self._error = loss, process, None
        self._thread: threading.Thread | None = None
        self.apart = process is not None
        if thread is not None:
            self._thread = threading.Thread(target=self._run, args=(thread,), name="rl-value-fit")
            self._thread.start()

    def _run(self, fit: Callable[[], float]) -> None:
        try:
            self._loss = fit()
        except BaseException as error:  # re-raised by result() in the caller's thread
            self._error = error

    def result(self) -> float:
        if self._process is not None:
            process, self._process = self._process, None
            self._loss = process.receive()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error
        assert self._loss is not None
        return self._loss


class ValueFitProcess:
    """The child process that fits value networks (``ValueFitProcess.shared()``)."""

    _shared: tuple[int, ValueFitProcess] | None = None  # (pid of the owner, process)

    @classmethod
    def shared(cls) -> ValueFitProcess:
        """This process's child, started on first use (a forked process starts its own)."""
        kept = cls._shared
        if kept is None or kept[0] != os.getpid() or not kept[1]._process.is_alive():
            kept = cls._shared = (os.getpid(), cls())
        return kept[1]

    def __init__(self) -> None:
        context = mp.get_context("spawn")
        self._connection, child_end = context.Pipe()
        self._process = context.Process(
            target=_serve,
            args=(child_end, os.getpid(), torch.get_num_threads()),
            name="rl-value-fit",
            daemon=True,
        )
        with _stop_signals_held(), _main_module_hidden():
            self._process.start()
        child_end.close()
        # before multiprocessing's own exit handler, which would wait for a child that
        # ignores its SIGTERM
        atexit.register(self.close)
        self._bound: tuple[list[object], int] | None = None
        self._busy = False
        self._started = False  # the child has said it is ready (it imports torch first)
        self._inputs: tuple[Tensor, ...] | None = None  # observations, returns, orders

    def ready(self) -> bool:
        """Whether the child has started (never waits; until then the loop fits itself)."""
        if not self._started and self._connection.poll(0):
            self._wait_started()
        return self._started

    def _wait_started(self) -> None:
        if not self._started:
            self._busy = True
            self.receive()  # the child's "ready"
            self._started = True

    def bind(self, value: nn.Module, optimizer: torch.optim.Adam) -> None:
        """Fit ``value`` with ``optimizer`` from now on: both moved to shared memory (in
        place) and sent to the child."""
        self._wait_started()
        state = [_shared_adam_state(optimizer, p) for p in value.parameters()]
        value.share_memory()
        # what the child holds (kept referenced here, so that no other object takes an id)
        bound = [value, *(t for s in state for t in s.values())]
        threads = torch.get_num_threads()
        if self._is_bound(bound, threads):
            return
        hyper = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
        self._request(("bind", value, hyper, state, threads))
        self.receive()
        self._bound = (bound, threads)

    def _is_bound(self, bound: list[object], threads: int) -> bool:
        kept = self._bound
        if kept is None or kept[1] != threads or len(bound) != len(kept[0]):
            return False
        return all(a is b for a, b in zip(bound, kept[0], strict=True))

    def submit(
        self,
        observations: Tensor,
        returns: Tensor,
        epochs: int,
        minibatch_size: int,
        generator: torch.Generator | None,
    ) -> PendingFit:
        """Start a fit of the bound network (shuffles drawn here, as ``fit_value`` does). The
        data go through shared buffers that the child keeps: copied into them while their
        shapes stay the same, sent (new buffers) when they change."""
        self._wait_started()
        self._check_idle()  # before the child's buffers are written
        orders = shuffled_orders(returns.shape[0], epochs, generator, returns.device)
        stacked = torch.stack(orders) if orders else torch.empty(0, 0, dtype=torch.int64)
        data = (observations, returns, stacked)
        kept = self._inputs
        layout = [(tensor.shape, tensor.dtype) for tensor in data]
        if kept is None or [(buffer.shape, buffer.dtype) for buffer in kept] != layout:
            kept = self._inputs = tuple(torch.empty_like(d).share_memory_() for d in data)
            sent: tuple[Tensor, ...] | None = kept
        else:
            sent = None  # the child has them
        for buffer, tensor in zip(kept, data, strict=True):
            buffer.copy_(tensor)
        self._request(("fit", sent, minibatch_size))
        return PendingFit(process=self)

    def receive(self) -> Any:
        """The child's answer to the last request (its error raised here)."""
        try:
            kind, payload = self._connection.recv()
        except (EOFError, OSError):
            self._busy = False
            ValueFitProcess._shared = None
            raise RuntimeError(
                f"the value-fit process died (exit code {self._process.exitcode})"
            ) from None
        self._busy = False
        if kind == "error":
            self._inputs = None  # sent again with the next fit
            raise payload
        return payload

    def close(self) -> None:
        """End the child (at exit; a fit under way is abandoned)."""
        self._connection.close()
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=5)
        # spawn's resource tracker, which would outlive this process by a moment
        with contextlib.suppress(Exception):
            resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]

    def _check_idle(self) -> None:
        if self._busy:
            raise RuntimeError("a value fit is still running: call result() on it first")

    def _request(self, message: tuple[Any, ...]) -> None:
        self._check_idle()
        self._connection.send(message)
        self._busy = True


def _shared_adam_state(optimizer: torch.optim.Adam, parameter: Tensor) -> dict[str, Tensor]:
    """``optimizer.state[parameter]`` (made as ``Adam.step`` makes it), in shared memory."""
    state = optimizer.state[parameter]
    if not state:
        group = optimizer.param_groups[0]
        state["step"] = torch.tensor(0.0, dtype=torch.float32)
        names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")[: 3 if group["amsgrad"] else 2]
        for name in names:
            state[name] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
    for tensor in state.values():
        tensor.share_memory_()
    return state


STOP_SIGNALS = StopOnSignals.SIGNALS


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """While the child starts: stop signals blocked here and ignored, which the child
    inherits through exec (it ignores a Ctrl-C while it imports torch)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """While spawning: ``__main__`` without ``__spec__``/``__file__``, so that spawn does not
    run the user's script again in the child (one without an ``if __name__`` guard)."""
    main = sys.modules["__main__"]
    saved = {
        name: main.__dict__[name] for name in ("__spec__", "__file__") if name in main.__dict__
    }
    main.__dict__["__spec__"] = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


# ------------------------------------------------------------------------- the child
def _warm_up() -> None:
    """One tiny fit: torch's first-use imports done before the child says it is ready."""
    value = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.Linear(2, 1))
    optimizer = torch.optim.Adam(value.parameters(), foreach=True)
    fit_value(value, optimizer, torch.zeros(4, 2), torch.zeros(4, 1), 1, 2)


def _serve(connection: Connection, parent: int, threads: int) -> None:
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _warm_up()
    try:
        connection.send(("ok", "ready"))
    except OSError:  # the training process is gone already
        return
    value: nn.Module | None = None
    optimizer: torch.optim.Adam | None = None
    inputs: tuple[Tensor, ...] = ()  # the shared buffers of the last fit's data
    while True:
        if not connection.poll(PARENT_CHECK_SECONDS):
            if os.getppid() != parent:
                return  # the training process is gone
            continue
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        try:
            if message[0] == "bind":
                _, value, hyper, state, threads = message
                torch.set_num_threads(threads)
                optimizer = torch.optim.Adam(value.parameters(), **hyper)
                for parameter, parameter_state in zip(value.parameters(), state, strict=True):
                    optimizer.state[parameter] = parameter_state
                answer: Any = None
            else:
                _, sent, minibatch_size = message
                inputs = sent if sent is not None else inputs
                observations, returns, orders = inputs
                assert value is not None and optimizer is not None
                answer = fit_value(
                    value, optimizer, observations, returns, len(orders), minibatch_size,
                    orders=list(orders),
                )  # fmt: skip
            reply: tuple[str, Any] = ("ok", answer)
        except Exception as error:
            reply = ("error", error)
        try:
            connection.send(reply)
        except Exception as error:  # an exception that does not pickle
            with contextlib.suppress(Exception):
                connection.send(("error", RuntimeError(f"{type(error).__name__}: {error}")))
