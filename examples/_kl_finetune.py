"""The fine-tuning loop the transformer and CNN examples share: KL-bounded steps, measured.

Each step fixes the model's current predictions on the step's batch as the "old"
distribution, takes one TrustRegionOptimizer step with the closure the example builds, then
measures (without the optimizer) the mean KL(old ‖ new) over every predicted distribution,
the objective, and the time of the step against one Adam step on the same batch and model.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trust_region import GGNClosureResult, TrustRegionOptimizer

Batch = tuple[Tensor, Tensor]  # inputs, integer targets (one per predicted distribution)
ClosureFactory = Callable[[nn.Module, Batch, Tensor], Callable[[], GGNClosureResult]]


@dataclass(frozen=True)
class StepRecord:
    """What one KL-bounded step did, measured after it on the step's batch."""

    step: int
    objective_before: float  # fine-tuning loss before the step
    objective_after: float
    step_kl: float  # mean KL(predictions before the step ‖ after), over every distribution
    accepted: bool
    backtracks: int
    step_seconds: float  # the TrustRegionOptimizer step
    adam_seconds: float  # one Adam step (forward, backward, update) on the same batch


@dataclass(frozen=True)
class FinetuneRun:
    """The fine-tuning objective on held-out data before and after, and every step."""

    eval_objective_start: float
    eval_objective_end: float
    steps: list[StepRecord]


def categorical_kl(old_logits: Tensor, new_logits: Tensor) -> Tensor:
    """Mean of KL(softmax(old) ‖ softmax(new)) over every leading position (``(..., V)``)."""
    old_log_probs = old_logits.log_softmax(-1)
    return (old_log_probs.exp() * (old_log_probs - new_logits.log_softmax(-1))).sum(-1).mean()


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over every position: logits ``(..., V)``, targets ``(...)``."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def evaluate(model: nn.Module, batch: Batch) -> float:
    with torch.no_grad():
        return cross_entropy(model(batch[0]), batch[1]).item()


def pretrain(model: nn.Module, batches: Iterator[Batch], steps: int) -> float:
    """Ordinary Adam training on the original data; returns the last batch's loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss = torch.zeros(())
    for _, (inputs, targets) in zip(range(steps), batches, strict=False):
        optimizer.zero_grad()
        loss = cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
    return loss.item()


def parse_args(argv: list[str] | None, description: str, max_kl: float) -> argparse.Namespace:
    """The examples' command line: ``--quick``, ``--steps``, ``--max-kl``, ``--seed``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="short pretraining and 6 steps")
    parser.add_argument("--steps", type=int, default=None, help="steps (default: 10, quick 6)")
    parser.add_argument(
        "--max-kl", type=float, default=max_kl, help=f"KL bound (default: {max_kl})"
    )
    parser.add_argument("--seed", type=int, default=0, help="model and data seed (default: 0)")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 6 if args.quick else 10
    return args


def adam_step_seconds(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch) -> float:
    """Time of one Adam step on ``batch`` (``model`` is a copy: the run is not changed)."""
    start = time.perf_counter()
    optimizer.zero_grad()
    cross_entropy(model(batch[0]), batch[1]).backward()
    optimizer.step()
    return time.perf_counter() - start


def kl_finetune(
    model: nn.Module,
    batches: Iterator[Batch],
    eval_batch: Batch,
    make_closure: ClosureFactory,
    steps: int,
    max_kl: float,
    **optimizer_options: object,
) -> FinetuneRun:
    """``steps`` TrustRegionOptimizer steps, one batch each, every one with KL ≤ ``max_kl``."""
    model.eval()  # the closure must be deterministic: it runs once per line-search candidate
    optimizer = TrustRegionOptimizer(model.parameters(), max_kl=max_kl, **optimizer_options)
    adam_model = copy.deepcopy(model)
    adam = torch.optim.Adam(adam_model.parameters(), lr=1e-3)
    start = evaluate(model, eval_batch)
    records = []
    for step in range(1, steps + 1):
        batch = next(batches)
        with torch.no_grad():
            old_logits = model(batch[0])  # the previous model's predictions, fixed
        adam_model.load_state_dict(model.state_dict())
        adam_seconds = adam_step_seconds(adam_model, adam, batch)
        began = time.perf_counter()
        result = optimizer.step(make_closure(model, batch, old_logits))
        step_seconds = time.perf_counter() - began
        with torch.no_grad():
            logits = model(batch[0])
            records.append(
                StepRecord(
                    step=step,
                    objective_before=cross_entropy(old_logits, batch[1]).item(),
                    objective_after=cross_entropy(logits, batch[1]).item(),
                    step_kl=categorical_kl(old_logits, logits).item(),
                    accepted=result.accepted,
                    backtracks=result.backtracks,
                    step_seconds=step_seconds,
                    adam_seconds=adam_seconds,
                )
            )
        print_record(records[-1])
    return FinetuneRun(start, evaluate(model, eval_batch), records)


HEADER = "step  objective before -> after   step KL   line search      cost vs Adam"


def print_record(record: StepRecord) -> None:
    status = "accepted" if record.accepted else "rejected"
    ratio = record.step_seconds / record.adam_seconds
    print(
        f"{record.step:4d}  {record.objective_before:9.4f} -> {record.objective_after:7.4f}  "
        f"{record.step_kl:9.5f}   {status}, {record.backtracks} bt   "
        f"{ratio:5.1f}x ({1e3 * record.step_seconds:.0f} ms)"
    )


def print_summary(run: FinetuneRun, max_kl: float) -> None:
    kls = [r.step_kl for r in run.steps]
    ratios = sorted(r.step_seconds / r.adam_seconds for r in run.steps)
    print(
        f"held-out objective {run.eval_objective_start:.4f} -> {run.eval_objective_end:.4f}; "
        f"largest step KL {max(kls):.5f} (max_kl {max_kl}); a step costs "
        f"{ratios[len(ratios) // 2]:.1f}x an Adam step (median)"
    )
