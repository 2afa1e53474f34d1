"""How far a step is from the hardware: its counted FLOPs per second beside ``torch.matmul``'s measured throughput.

``counted_flops`` counts one call's floating-point operations with ``torch.utils.flop_counter`` (matrix
multiplies and convolutions, forward and backward; 2 FLOPs per multiply-add), ``matmul_flops_per_s`` times a
square fp32 matmul on the same device, and ``hardware_line`` puts the two side by side.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from .timing import sync

__all__ = ["counted_flops", "hardware_line", "matmul_flops_per_s"]


def counted_flops(step: Callable[[], object]) -> int:
    """The FLOPs of one call of ``step`` (matmuls and convolutions, forward and backward).

    Examples:
        >>> layer, x = torch.nn.Linear(8, 4, bias=False), torch.ones(2, 8)
        >>> counted_flops(lambda: layer(x).sum().backward())  # forward + weight gradient: 2 x (2 * 2 * 8 * 4)
        256
    """
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def matmul_flops_per_s(
    n: int | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, rounds: int = 5
) -> float:
    """Median FLOP/s of an ``n`` x ``n`` by ``n`` x ``n`` ``torch.matmul`` (``2 n^3`` FLOPs) after one warm-up;
    ``n`` defaults to 1024 on a CPU and 8192 on a GPU (where a 1024 product is over in tens of microseconds, too
    short for a host clock and its synchronisation to time)."""
    device = torch.device(device)
    if n is None:
        n = 1024 if device.type == "cpu" else 8192
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    torch.matmul(a, b)
    sync(device)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times)


def hardware_line(name: str, flops: int, seconds: float, peak_flops_per_s: float) -> str:
    """One line: the step's counted GFLOP, its GFLOP/s at ``seconds`` per step, and the fraction of ``peak``.

    Examples:
        >>> hardware_line("ours_darts", 3_000_000_000, 2.0, 60e9)
        'ours_darts: 3.00 GFLOP per step (counted) at 2.000 s = 1.5 GFLOP/s; torch.matmul 60.0 GFLOP/s; 2.5 % of it'
    """
    rate = flops / seconds
    return (
        f"{name}: {flops / 1e9:.2f} GFLOP per step (counted) at {seconds:.3f} s = {rate / 1e9:.1f} GFLOP/s; "
        f"torch.matmul {peak_flops_per_s / 1e9:.1f} GFLOP/s; {100 * rate / peak_flops_per_s:.1f} % of it"
    )
