"""Fine-tune a classifier on shifted data, each step inside a KL trust region: not RL at all.

    python examples/constrained_finetune.py [--steps 12] [--max-kl 0.02] [--seed 0]

A small MLP is trained on synthetic data "A" (four Gaussian blobs in the plane, one per class,
on a circle), then fine-tuned on data "B", where the blobs have turned 40 degrees around the
origin. Each fine-tuning step is a TrustRegionOptimizer step: it lowers the cross-entropy on B
while keeping the mean KL(previous predictions ‖ new) on B's inputs at most ``max_kl``, so the
model can only drift a bounded amount per step. The printout shows accuracy on B rising,
accuracy on A (what the model gives up on the old data, a little per step), the KL of the step,
the KL to the original model, and what the line search did. A few seconds on one CPU core.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trust_region import (
    GGNClosureResult,
    TrustRegionOptimizer,
    categorical_fisher_vp,
    functional_model,
)

CLASSES, SAMPLES_PER_CLASS, RADIUS, NOISE, ROTATION_DEGREES = 4, 200, 3.0, 1.0, 40.0


@dataclass(frozen=True)
class Dataset:
    inputs: Tensor  # (N, 2)
    labels: Tensor  # (N,) class indices


@dataclass(frozen=True)
class StepRecord:
    """What one fine-tuning step did, measured after it."""

    step: int
    accuracy_b: float
    accuracy_a: float
    step_kl: float  # mean KL(predictions before the step ‖ after) on B's inputs
    kl_to_original: float  # mean KL(original model ‖ current) on B's inputs
    accepted: bool
    backtracks: int


@dataclass(frozen=True)
class FinetuneRun:
    """Accuracies before fine-tuning and a record of every step."""

    start_accuracy_a: float
    start_accuracy_b: float
    steps: list[StepRecord]


def make_blobs(rotation_degrees: float, generator: torch.Generator) -> Dataset:
    """``SAMPLES_PER_CLASS`` noisy points around each class center; the centers are evenly
    spaced on a circle of radius ``RADIUS``, turned by ``rotation_degrees``."""
    angles = torch.arange(CLASSES) * (2 * math.pi / CLASSES) + math.radians(rotation_degrees)
    centers = RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.arange(CLASSES).repeat_interleave(SAMPLES_PER_CLASS)
    noise = NOISE * torch.randn(len(labels), 2, generator=generator)
    return Dataset(centers[labels] + noise, labels)


def make_tasks(seed: int) -> tuple[Dataset, Dataset]:
    """Data A, and data B: the same classes with every center turned ``ROTATION_DEGREES``."""
    generator = torch.Generator().manual_seed(seed)
    return make_blobs(0.0, generator), make_blobs(ROTATION_DEGREES, generator)


def categorical_kl(old_logits: Tensor, new_logits: Tensor) -> Tensor:
    """Mean over samples of KL(softmax(old) ‖ softmax(new))."""
    old_log_probs = old_logits.log_softmax(-1)
    return (old_log_probs.exp() * (old_log_probs - new_logits.log_softmax(-1))).sum(-1).mean()


def accuracy(model: nn.Module, data: Dataset) -> float:
    with torch.no_grad():
        return (model(data.inputs).argmax(-1) == data.labels).float().mean().item()


def pretrain(model: nn.Module, data: Dataset, epochs: int = 300) -> None:
    """Ordinary full-batch Adam training on A."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        optimizer.zero_grad()
        F.cross_entropy(model(data.inputs), data.labels).backward()
        optimizer.step()


def finetune_closure(model: nn.Module, data: Dataset, old_logits: Tensor) -> GGNClosureResult:
    """Cross-entropy on B and KL(old ‖ new), with what the Gauss-Newton Fisher products need:
    the logits as a pure function of the parameters and the softmax's output-space Hessian."""
    params = list(model.parameters())
    model_fn = functional_model(model, params)

    def outputs_fn(values: tuple[Tensor, ...], index: Tensor | None) -> Tensor:
        return model_fn(values, data.inputs if index is None else data.inputs[index])

    logits = model(data.inputs)
    return GGNClosureResult(
        loss=F.cross_entropy(logits, data.labels),
        kl=categorical_kl(old_logits, logits),
        outputs_fn=outputs_fn,
        output_fisher_vp=categorical_fisher_vp,
        num_samples=len(data.labels),
    )


def finetune(
    model: nn.Module, task_a: Dataset, task_b: Dataset, steps: int, max_kl: float
) -> list[StepRecord]:
    """``steps`` trust-region steps on B; the old predictions are fixed once per step."""
    model.eval()  # the closure must be deterministic: it runs once per line-search candidate
    optimizer = TrustRegionOptimizer(model.parameters(), max_kl=max_kl, cg_iters=20)
    with torch.no_grad():
        original_logits = model(task_b.inputs)
    records = []
    for step in range(1, steps + 1):
        with torch.no_grad():
            old_logits = model(task_b.inputs)  # "previous predictions", fixed for this step
        result = optimizer.step(partial(finetune_closure, model, task_b, old_logits))
        with torch.no_grad():
            logits = model(task_b.inputs)
            record = StepRecord(
                step=step,
                accuracy_b=accuracy(model, task_b),
                accuracy_a=accuracy(model, task_a),
                step_kl=categorical_kl(old_logits, logits).item(),
                kl_to_original=categorical_kl(original_logits, logits).item(),
                accepted=result.accepted,
                backtracks=result.backtracks,
            )
        records.append(record)
    return records


def print_record(record: StepRecord) -> None:
    status = "accepted" if record.accepted else "rejected"
    print(
        f"{record.step:4d}  {record.accuracy_b:6.3f}  {record.accuracy_a:6.3f}  "
        f"{record.step_kl:9.5f}  {record.kl_to_original:8.4f}  {status} "
        f"after {record.backtracks} backtracks"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="fine-tuning steps (default: 12)")
    parser.add_argument(
        "--max-kl", type=float, default=0.02, help="KL bound of each step (default: 0.02)"
    )
    parser.add_argument("--seed", type=int, default=0, help="data and model seed (default: 0)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> FinetuneRun:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    task_a, task_b = make_tasks(args.seed)
    model = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, CLASSES))
    pretrain(model, task_a)
    start_a, start_b = accuracy(model, task_a), accuracy(model, task_b)
    print(f"after training on A: accuracy on A {start_a:.3f}, on B {start_b:.3f}")
    print(f"fine-tuning on B, each step with KL(previous ‖ new) <= {args.max_kl}")
    print("step  acc(B)  acc(A)    step KL  KL(orig)  line search")
    records = finetune(model, task_a, task_b, args.steps, args.max_kl)
    for record in records:
        print_record(record)
    return FinetuneRun(start_a, start_b, records)


if __name__ == "__main__":
    main()
