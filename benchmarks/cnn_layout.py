"""The Nature CNN's throughput on this CPU: forward, forward + backward and a Gauss-Newton
product (torch.func jvp + vjp, as the optimizer's "ggn" products), contiguous against
channels-last memory, and the rounding difference between the two layouts.

    python benchmarks/cnn_layout.py                  # 1,024 frames, 2 threads
    python benchmarks/cnn_layout.py --frames 2048 --threads 1

GFLOP/s counts the forward's multiply-adds twice (18.7 MFLOP per 84x84x4 frame).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from gymnasium import spaces
from torch.func import functional_call, jvp, vjp

from rl.cnn import NatureCNN

FORWARD_MACS = 20 * 20 * 32 * 8 * 8 * 4 + 9 * 9 * 64 * 4 * 4 * 32 + 7 * 7 * 64 * 3 * 3 * 64


def best_of(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    network = torch.nn.Sequential(
        NatureCNN(spaces.Box(0, 255, (4, 84, 84), np.uint8)), torch.nn.Linear(3136, 6)
    )
    frames = torch.randint(0, 256, (args.frames, 4 * 84 * 84), dtype=torch.uint8)
    flop = 2 * args.frames * (FORWARD_MACS + 3136 * 6)
    outputs = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        network = network.to(memory_format=layout)
        times, outputs[layout] = measure(network, frames, args.repeats)
        forward, forward_backward, gauss_newton = (t * 1e3 for t in times)
        print(f"{layout!s:28s} forward {forward:7.1f} ms ({flop / times[0] / 1e9:5.1f} GFLOP/s)"
              f"  forward+backward {forward_backward:7.1f} ms  jvp+vjp {gauss_newton:7.1f} ms",
              flush=True)  # fmt: skip
    difference = (outputs[torch.contiguous_format] - outputs[torch.channels_last]).abs().max()
    print(f"largest output difference between the layouts: {float(difference):.2e}")


def measure(
    network: torch.nn.Module, frames: torch.Tensor, repeats: int
) -> tuple[tuple[float, float, float], torch.Tensor]:
    """Best times of a forward, a forward + backward and a jvp + vjp; the outputs."""
    params = dict(network.named_parameters())
    tangents = {name: torch.randn_like(p) for name, p in params.items()}

    def model(values: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(network, values, (frames,))

    def forward() -> None:
        with torch.no_grad():
            network(frames)

    def forward_backward() -> None:
        network.zero_grad()
        network(frames).square().sum().backward()

    def gauss_newton() -> None:
        _, tangent_out = jvp(model, (params,), (tangents,))
        vjp(model, params)[1](tangent_out)

    times = (
        best_of(forward, repeats),
        best_of(forward_backward, repeats),
        best_of(gauss_newton, max(1, repeats - 1)),
    )
    with torch.no_grad():
        return times, network(frames)


if __name__ == "__main__":
    main()
