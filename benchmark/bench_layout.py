"""Contiguous (NCHW) against channels-last (NHWC) per network, width and dtype: the measurements behind
``memory_format: auto`` (:func:`~.speed.resolve_memory_format`).

    python -m egsbench.benchmark.bench_layout --channels 4 8 16 32 --csv results/benchmarks/memory-format-cpu.csv

Each width times a dense DARTS search step, a GDAS search step and a final-network training step (forward +
backward of a DARTS_V2 ``NetworkCIFAR``) in both layouts, interleaved. Method and reading:
docs/benchmarks.md#bench_layout.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import platform
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ..tasks.spaces import DARTS_V2, NetworkCIFAR
from .bench_methods import make_step
from .speed import MEMORY_FORMATS, apply_memory_format, conv_width
from .timing import time_interleaved

__all__ = ["NETWORKS", "main", "time_layouts"]

NETWORKS = ("darts_1st", "gdas", "final")  # two search steps (dense, one sampled op per edge) and a final network
FIELDS = ("device", "dtype", "network", "channels", "width", "layers", "batch", "contiguous_s", "channels_last_s")


def _final_step(
    channels: int, layers: int, batch: int, device: torch.device, memory_format: str, dtype: torch.dtype
) -> tuple[Callable[[], None], int]:
    torch.manual_seed(0)
    net = apply_memory_format(NetworkCIFAR(DARTS_V2, channels, 10, layers).to(device), memory_format)
    net.train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)

    def run() -> None:
        net.zero_grad(set_to_none=True)
        with _autocast(device, dtype):
            logits = net(x)[0]
        F.cross_entropy(logits.float(), y).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run, conv_width(net)


def _autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _step(network: str, channels: int, layers: int, batch: int, device, memory_format: str, dtype: torch.dtype):
    if network == "final":
        return _final_step(channels, layers, batch, device, memory_format, dtype)
    step = make_step(network, channels, layers, batch, device, memory_format)

    def run() -> None:
        with _autocast(device, dtype):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run, None


def time_layouts(
    channels: list[int],
    layers: int,
    batch: int,
    rounds: int,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    networks: tuple[str, ...] = NETWORKS,
) -> list[dict]:
    """One row per (network, width): median seconds per step in each layout, the two layouts interleaved."""
    device, torch_dtype = torch.device(device), getattr(torch, dtype)
    rows = []
    for c in channels:
        for network in networks:
            variants, width = {}, None
            for fmt in MEMORY_FORMATS:
                variants[fmt], w = _step(network, c, layers, batch, device, fmt, torch_dtype)
                width = w or width
            result = time_interleaved(variants, rounds, "contiguous", {"channels": c})
            row = dict(device=device.type, dtype=dtype, network=network, channels=c, width=width or c)
            row |= dict(layers=layers, batch=batch)
            row |= {f"{fmt}_s": round(result["median_s"][fmt], 4) for fmt in MEMORY_FORMATS}
            rows.append(row)
            print(
                f"  {network:10s} C={c:3d}  contiguous {row['contiguous_s']:7.3f} s  channels_last "
                f"{row['channels_last_s']:7.3f} s  ratio {row['channels_last_s'] / row['contiguous_s']:.2f}",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    parser.add_argument("--csv", default=None, help="append the rows to this CSV (header written when new)")
    args = parser.parse_args(argv)
    print(
        f"channels-last / contiguous, {args.device} ({platform.processor() or platform.machine()}), {args.dtype}, "
        f"{args.layers} cells, batch {args.batch}, {args.rounds} interleaved rounds, {torch.get_num_threads()} threads"
    )
    rows = time_layouts(args.channels, args.layers, args.batch, args.rounds, args.device, args.dtype, args.networks)
    if args.csv:
        path = Path(args.csv)
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=FIELDS)
            if new:
                writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
