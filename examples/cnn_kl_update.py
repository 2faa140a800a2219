"""Adapt a small CNN image classifier to shifted images, every update's KL bounded.

    python examples/cnn_kl_update.py [--quick] [--steps 10] [--max-kl 0.02]

Images are generated (nothing downloaded): 16×16 pictures of a bar at one of four angles
(the class), at a random offset, with noise. A CNN (two convolutions, GroupNorm, pooling,
linear read-out) is trained with Adam on bright bars on a dark background, then fine-tuned on
a shifted distribution, thicker and dimmer bars on a brighter, noisier background. Every
fine-tuning update is a TrustRegionOptimizer step whose mean KL(previous model ‖ new model)
over the batch's class distributions is at most ``max_kl``, in the Gauss-Newton form
(``GGNClosureResult``, one distribution per image). Printed per step: the objective on the
step's batch, the KL measured after the step and the step's time against an Adam step on the
same batch. Under a minute on one CPU (``--quick``: seconds).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _kl_finetune import (
    HEADER,
    Batch,
    FinetuneRun,
    categorical_kl,
    cross_entropy,
    kl_finetune,
    parse_args,
    pretrain,
    print_summary,
)

from trust_region import (
    GGNClosureResult,
    categorical_fisher_vp,
    functional_model,
)

SIZE, CLASSES, BATCH = 16, 4, 64


@dataclass(frozen=True)
class ImageStyle:
    """How the bars are drawn: one style for pretraining, another for fine-tuning."""

    half_width: float  # bar half-thickness in pixels
    foreground: float
    background: float
    noise: float


ORIGINAL = ImageStyle(half_width=0.8, foreground=1.0, background=0.0, noise=0.2)
SHIFTED = ImageStyle(half_width=1.6, foreground=0.7, background=0.4, noise=0.35)


def bar_images(style: ImageStyle, count: int, generator: torch.Generator) -> Batch:
    """``count`` images ``(N, 1, SIZE, SIZE)`` of a bar at angle ``label × 45°`` and labels."""
    labels = torch.randint(0, CLASSES, (count,), generator=generator)
    angles = labels.float() * (math.pi / CLASSES)
    centre = (SIZE - 1) / 2 + torch.randint(-3, 4, (count, 2), generator=generator).float()
    grid = torch.arange(SIZE, dtype=torch.float32)
    dy = grid[None, :, None] - centre[:, 0, None, None]
    dx = grid[None, None, :] - centre[:, 1, None, None]
    distance = (dx * angles.sin()[:, None, None] - dy * angles.cos()[:, None, None]).abs()
    bar = torch.sigmoid(4.0 * (style.half_width - distance))  # soft edges
    image = style.background + (style.foreground - style.background) * bar
    image = image + style.noise * torch.randn(image.shape, generator=generator)
    return image[:, None], labels


def batches(style: ImageStyle, seed: int) -> Iterator[Batch]:
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield bar_images(style, BATCH, generator)


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, CLASSES),
    )  # fmt: skip


def accuracy(model: nn.Module, batch: Batch) -> float:
    with torch.no_grad():
        return (model(batch[0]).argmax(-1) == batch[1]).float().mean().item()


def make_closure(model: nn.Module, batch: Batch, old_logits: Tensor):
    """Cross-entropy on the shifted images and KL(old ‖ new), one distribution per image."""
    images, labels = batch
    model_fn = functional_model(model, list(model.parameters()))

    def closure() -> GGNClosureResult:
        logits = model(images)
        return GGNClosureResult(
            loss=cross_entropy(logits, labels),
            kl=categorical_kl(old_logits, logits),
            outputs_fn=lambda ps, idx: model_fn(ps, images if idx is None else images[idx]),
            output_fisher_vp=categorical_fisher_vp,
            num_samples=len(images),
        )

    return closure


def main(argv: list[str] | None = None) -> FinetuneRun:
    args = parse_args(argv, __doc__.splitlines()[0], max_kl=0.02)
    torch.manual_seed(args.seed)
    model = make_model()
    loss = pretrain(model, batches(ORIGINAL, args.seed), 150 if args.quick else 300)
    held_out = torch.Generator().manual_seed(10_000 + args.seed)
    original_eval, shifted_eval = (bar_images(s, 512, held_out) for s in (ORIGINAL, SHIFTED))
    print(
        f"pretrained on bright thin bars: loss {loss:.3f}, accuracy "
        f"{accuracy(model, original_eval):.3f}; on the shifted images "
        f"{accuracy(model, shifted_eval):.3f}"
    )
    print(f"fine-tuning on the shifted images, each step with KL(previous ‖ new) <= {args.max_kl}")
    print(HEADER)
    run = kl_finetune(
        model, batches(SHIFTED, args.seed + 1), shifted_eval, make_closure, args.steps, args.max_kl,
        cg_iters=10, damping=0.01,
    )  # fmt: skip
    print_summary(run, args.max_kl)
    print(f"accuracy on the shifted images now {accuracy(model, shifted_eval):.3f}")
    return run


if __name__ == "__main__":
    main()
