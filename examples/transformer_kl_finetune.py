"""Fine-tune a small causal transformer language model with every update's KL bounded.

    python examples/transformer_kl_finetune.py [--quick] [--steps 10] [--max-kl 0.01]

A character-level language model (stock ``nn.TransformerEncoderLayer`` blocks, pre-norm,
causal ``src_mask`` with ``is_causal=True``) is trained briefly with Adam on the Zen of
Python (it ships with Python: ``this.py``), then fine-tuned on a shifted objective, the Zen
in the past tense ("Beautiful was better than ugly."). Every fine-tuning update is a
TrustRegionOptimizer step whose mean KL(previous model ‖ new model) over the batch's B·T
next-token distributions is at most ``max_kl``: the trust-region alternative to the ratio
clipping used in LLM policy optimization. The closure returns the Gauss-Newton form
(``GGNClosureResult`` with ``num_samples=B``, ``positions_per_sample=T``). Printed per step:
the objective on the step's batch, the KL measured after the step, and the step's time
against an Adam step on the same batch. Under a minute on one CPU (``--quick``: seconds).
"""

from __future__ import annotations

import ast
import codecs
import importlib.util
import sys
from collections.abc import Iterator
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

CONTEXT, WIDTH, HEADS, LAYERS, BATCH = 32, 48, 4, 2, 16


def zen_of_python() -> str:
    """The Zen of Python, read from the ``this`` module's source (importing it prints it)."""
    spec = importlib.util.find_spec("this")
    assert spec is not None and spec.loader is not None
    source = spec.loader.get_source("this")  # type: ignore[attr-defined]
    assignment = ast.parse(source).body[0]
    assert isinstance(assignment, ast.Assign) and isinstance(assignment.value, ast.Constant)
    return codecs.decode(assignment.value.value, "rot13")


def past_tense(text: str) -> str:
    """The shifted objective's text: "is" -> "was", "are" -> "were"."""
    for present, past in ((" is ", " was "), (" are ", " were "), ("Now is", "Now was")):
        text = text.replace(present, past)
    return text


class CausalLM(nn.Module):
    """Tokens ``(B, T)`` -> next-token logits ``(B, T, V)``, built from stock torch layers."""

    def __init__(self, vocab: int, width: int = WIDTH, heads: int = HEADS, layers: int = LAYERS):
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(0.02 * torch.randn(CONTEXT, width))
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.read_out = nn.Linear(width, vocab)

    def forward(self, tokens: Tensor) -> Tensor:
        length = tokens.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(length, dtype=self.position.dtype)
        hidden = self.embed(tokens) + self.position[:length]
        hidden = self.blocks(hidden, mask=mask, is_causal=True)
        return self.read_out(self.norm(hidden))


def encode(text: str, alphabet: str) -> Tensor:
    return torch.tensor([alphabet.index(c) for c in text])


def windows(ids: Tensor, generator: torch.Generator, size: int = BATCH) -> Batch:
    """``size`` random windows: inputs ``(B, T)`` and their next characters ``(B, T)``."""
    starts = torch.randint(0, len(ids) - CONTEXT - 1, (size,), generator=generator)
    rows = starts[:, None] + torch.arange(CONTEXT + 1)
    chunk = ids[rows]
    return chunk[:, :-1], chunk[:, 1:]


def batches(ids: Tensor, seed: int) -> Iterator[Batch]:
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield windows(ids, generator)


def make_closure(model: nn.Module, batch: Batch, old_logits: Tensor):
    """The fine-tuning loss and KL(old ‖ new) over all B·T positions, in the Gauss-Newton
    form: the KL is a mean over ``B × T`` distributions, so ``num_samples=B`` (what
    ``outputs_fn``'s index selects: sequences) and ``positions_per_sample=T``."""
    inputs, targets = batch
    model_fn = functional_model(model, list(model.parameters()))

    def closure() -> GGNClosureResult:
        logits = model(inputs)
        return GGNClosureResult(
            loss=cross_entropy(logits, targets),
            kl=categorical_kl(old_logits, logits),
            outputs_fn=lambda ps, idx: model_fn(ps, inputs if idx is None else inputs[idx]),
            output_fisher_vp=categorical_fisher_vp,
            num_samples=inputs.shape[0],
            positions_per_sample=inputs.shape[1],
        )

    return closure


def main(argv: list[str] | None = None) -> FinetuneRun:
    args = parse_args(argv, __doc__.splitlines()[0], max_kl=0.01)
    torch.manual_seed(args.seed)
    original, shifted = zen_of_python(), past_tense(zen_of_python())
    alphabet = "".join(sorted(set(original + shifted)))
    model = CausalLM(len(alphabet))
    original_batches = batches(encode(original, alphabet), args.seed)
    loss = pretrain(model, original_batches, 150 if args.quick else 400)
    print(f"pretrained on the Zen of Python: loss {loss:.3f} nats/char")
    shifted_ids = encode(shifted, alphabet)
    eval_batch = windows(shifted_ids, torch.Generator().manual_seed(10_000 + args.seed), 64)
    print(f"fine-tuning on it in the past tense, each step with KL(previous ‖ new) <= "
          f"{args.max_kl} per token")  # fmt: skip
    print(HEADER)
    run = kl_finetune(
        model, batches(shifted_ids, args.seed + 1), eval_batch, make_closure, args.steps,
        args.max_kl, cg_iters=10, damping=0.01,
    )  # fmt: skip
    print_summary(run, args.max_kl)
    return run


if __name__ == "__main__":
    main()
