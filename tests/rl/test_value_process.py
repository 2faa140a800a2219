"""The value fit in its child process (rl.value_process) against ``fit_value`` here."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rl.config import ValueConfig
from rl.value import fit_value, make_value
from rl.value_process import ValueFitProcess, can_fit_in_process


def problem(seed: int = 0, size: int = 300):
    generator = torch.Generator().manual_seed(seed)
    observations = torch.randn(size, 5, generator=generator)
    returns = observations.sin().sum(1) * 4 + 2
    return observations, returns


def twins():
    torch.manual_seed(3)
    one = make_value(5, ValueConfig())
    two = make_value(5, ValueConfig())
    two.load_state_dict(one.state_dict())
    return (
        (one, torch.optim.Adam(one.parameters(), lr=3e-3)),
        (two, torch.optim.Adam(two.parameters(), lr=3e-3)),
    )


def test_the_fit_in_the_process_is_the_fit_here_bit_for_bit() -> None:
    (here, here_adam), (there, there_adam) = twins()
    process = ValueFitProcess.shared()
    process.bind(there, there_adam)
    for seed, size in enumerate([300, 300, 200, 300]):  # the child's buffers kept, then new
        observations, returns = problem(seed, size)
        want = fit_value(here, here_adam, observations, returns, 4, 64,
                         torch.Generator().manual_seed(seed))  # fmt: skip
        got = process.submit(observations, returns, 4, 64, torch.Generator().manual_seed(seed))
        assert got.result() == want
        assert not observations.is_shared()  # copied into the shared buffers, not moved
    for a, b in zip(here.parameters(), there.parameters(), strict=True):
        assert torch.equal(a, b)
    mine, theirs = here_adam.state_dict()["state"], there_adam.state_dict()["state"]
    assert mine.keys() == theirs.keys()
    for key in mine:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(mine[key][name], theirs[key][name]), (key, name)
    assert float(mine[0]["step"]) == 4 * (5 + 5 + 4 + 5)  # 4 epochs of 5 or 4 minibatches


def test_a_loaded_optimizer_state_continues_exactly_after_binding_again() -> None:
    (here, here_adam), (there, there_adam) = twins()
    observations, returns = problem(1)
    fit_value(here, here_adam, observations, returns, 2, 64, torch.Generator().manual_seed(0))
    there.load_state_dict(here.state_dict())
    there_adam.load_state_dict(copy.deepcopy(here_adam.state_dict()))  # bind shares them
    process = ValueFitProcess.shared()
    process.bind(there, there_adam)
    want = fit_value(here, here_adam, observations, returns, 2, 64,
                     torch.Generator().manual_seed(1))  # fmt: skip
    assert process.submit(observations, returns, 2, 64,
                          torch.Generator().manual_seed(1)).result() == want  # fmt: skip
    for a, b in zip(here.parameters(), there.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_fit_that_overflows_is_undone_in_place_there_and_here() -> None:
    (here, here_adam), (there, there_adam) = twins()
    process = ValueFitProcess.shared()
    process.bind(there, there_adam)
    before = [p.detach().clone() for p in there.parameters()]
    observations = torch.full((64, 5), 3e38)  # finite, but the squared error overflows
    returns = torch.full((64,), 3e38)
    assert process.submit(observations, returns, 2, 16, None).result() != 0  # NaN
    loss = fit_value(here, here_adam, observations, returns, 2, 16)
    assert loss != loss
    for a, b, c in zip(there.parameters(), here.parameters(), before, strict=True):
        assert torch.equal(a, c) and torch.equal(b, c)
    assert here_adam.state_dict()["state"] == {}
    assert all(float(s["step"]) == 0 for s in there_adam.state.values())
    assert all(not s["exp_avg"].any() for s in there_adam.state.values())


def test_an_error_in_the_fit_reaches_the_caller_and_the_process_goes_on() -> None:
    (_, _), (there, there_adam) = twins()
    process = ValueFitProcess.shared()
    process.bind(there, there_adam)
    pending = process.submit(torch.zeros(8, 3), torch.zeros(8), 1, 4, None)  # 3 != 5 inputs
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        pending.result()
    observations, returns = problem()
    assert process.submit(observations, returns, 1, 64, None).result() > 0


def test_only_a_cpu_adam_over_all_the_parameters_runs_there() -> None:
    value = make_value(5, ValueConfig())
    assert can_fit_in_process(value, torch.optim.Adam(value.parameters()))
    assert not can_fit_in_process(value, torch.optim.SGD(value.parameters(), lr=0.1))
    assert not can_fit_in_process(value, torch.optim.Adam(list(value.parameters())[:2]))


CHILD = """
import os, sys, time, torch
from rl.config import ValueConfig
from rl.value import make_value
from rl.value_process import ValueFitProcess
run_dir = open(sys.argv[1] + "/metrics.jsonl", "a")  # an open file of the run directory
value = make_value(5, ValueConfig())
process = ValueFitProcess.shared()
process.bind(value, torch.optim.Adam(value.parameters()))
print(process._process.pid, flush=True)
time.sleep(120)
"""


def test_the_process_ignores_stop_signals_holds_no_run_file_and_dies_with_its_parent(
    tmp_path: Path,
) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        child = int(parent.stdout.readline())
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            os.kill(child, number)
        time.sleep(0.5)
        assert Path(f"/proc/{child}").exists(), "a stop signal killed the value-fit process"
        links = [os.readlink(fd) for fd in Path(f"/proc/{child}/fd").iterdir()]
        assert not any(str(tmp_path) in link for link in links), links
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        status = (
            Path(f"/proc/{child}/status").read_text() if Path(f"/proc/{child}").exists() else ""
        )
        if "zombie" in status:
            break
        time.sleep(0.1)
    alive = (
        Path(f"/proc/{child}").exists()
        and "zombie" not in Path(f"/proc/{child}/status").read_text()
    )
    assert not alive, "the value-fit process outlived its parent"


AHEAD = """
import sys
from rl import TRPO, TRPOConfig
from rl.value_process import ValueFitProcess
config = TRPOConfig.from_preset("CartPole-v1", total_steps=256, steps_per_iteration=128)
TRPO(config.with_overrides({"value_fit_in_background": False})).save(sys.argv[1])
TRPO.load(sys.argv[1])
print(ValueFitProcess._shared is None)
agent = TRPO(config)
kept = ValueFitProcess._shared
print(kept is not None and kept[1]._process.is_alive())
agent.learn(progress="none")
print(ValueFitProcess._shared is kept)
"""


def test_an_agent_built_to_learn_starts_the_process_ahead_and_a_loaded_one_does_not(tmp_path):
    """``TRPO(config)`` starts the value-fit process (it imports torch while the envs' modules
    load), ``learn`` uses that one; no process without the background fit or for ``load``."""
    done = subprocess.run([sys.executable, "-c", AHEAD, str(tmp_path / "model.pt")],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True"]


def test_the_process_imports_torch_and_five_rl_modules_only() -> None:
    """What the child imports while the first fits wait for it: no gymnasium, pydantic or
    the rest of ``rl`` (``rl``'s public names load on first use), yet they still load."""
    code = (
        "import sys, rl.value_process;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('rl', 'gymnasium', 'pydantic', 'rich', 'yaml')));"
        "import rl, rl.loop; print(rl.TRPOConfig.__name__, rl.gae.__name__, 'TRPO' in dir(rl))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, second = out.stdout.splitlines()
    assert first == "['rl', 'rl.gae', 'rl.networks', 'rl.signals', 'rl.value', 'rl.value_process']"
    assert second == "TRPOConfig gae True"
