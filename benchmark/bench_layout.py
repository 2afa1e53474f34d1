"""Contiguous (NCHW) against channels-last (NHWC) per network, width and dtype: the measurements behind
``memory_format: auto`` (:func:`~.speed.resolve_memory_format`).

    python -m egsbench.benchmark.bench_layout --channels 4 8 16 32 --csv results/benchmarks/memory-format-cpu.csv

Each width times a dense DARTS search step, a GDAS search step and a final-network training step (forward +
backward of a DARTS_V2 ``NetworkCIFAR``) in both layouts, interleaved. Method and reading:
docs/benchmarks.md#bench_layout.
"""

from __future__ import annotations

import argparse
import csv
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

from ..tasks.spaces import DARTS_V2, NetworkCIFAR
from .bench_methods import make_method, method_step
from .launch import autocast, compute_dtype
from .speed import MEMORY_FORMATS, apply_memory_format, conv_width
from .timing import sync, time_interleaved

__all__ = ["NETWORKS", "main", "time_layouts"]

NETWORKS = ("darts_1st", "gdas", "final")  # two search steps (dense, one sampled op per edge) and a final network
FIELDS = ("device", "dtype", "network", "channels", "width", "layers", "batch", "contiguous_s", "channels_last_s")


def _network_step(network: str, channels: int, layers: int, batch: int, device: torch.device, memory_format: str):
    """One training step of ``network`` laid out in ``memory_format``, and the network (for its width)."""
    if network != "final":
        method = make_method(network, channels, layers, device, memory_format)
        return method_step(method, batch, device), method.ctx.model
    torch.manual_seed(0)
    net = apply_memory_format(NetworkCIFAR(DARTS_V2, channels, 10, layers).to(device), memory_format).train()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (batch,), generator=g).to(device)

    def final_step() -> None:
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x)[0].float(), y).backward()

    return final_step, net


def _step(network: str, channels: int, layers: int, batch: int, device, memory_format: str, precision: str):
    """The timed call: the step under ``precision``'s autocast (as a run's phase), synced."""
    step, net = _network_step(network, channels, layers, batch, device, memory_format)

    def run() -> None:
        with autocast(precision, device):
            step()
        sync(device)

    return run, conv_width(net)


def time_layouts(
    channels: list[int],
    layers: int,
    batch: int,
    rounds: int,
    device: str | torch.device = "cpu",
    precision: str = "no",
    networks: tuple[str, ...] = NETWORKS,
) -> list[dict]:
    """One row per (network, width): median seconds per step in each layout, the two layouts interleaved;
    ``precision`` is a config's (``no`` | ``bf16`` autocast)."""
    device = torch.device(device)
    dtype = str(compute_dtype(precision)).removeprefix("torch.")
    rows = []
    for c in channels:
        for network in networks:
            variants = {}
            for fmt in MEMORY_FORMATS:  # the width is the network's, the same in both layouts
                variants[fmt], width = _step(network, c, layers, batch, device, fmt, precision)
            result = time_interleaved(variants, rounds, "contiguous", {"channels": c})
            row = dict(device=device.type, dtype=dtype, network=network, channels=c, width=width)
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
    parser.add_argument(
        "--precision", default="no", choices=("no", "bf16"), help="autocast, as a config's (search_)mixed_precision"
    )
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    parser.add_argument("--csv", default=None, help="append the rows to this CSV (header written when new)")
    args = parser.parse_args(argv)
    print(
        f"channels-last / contiguous, {args.device} ({platform.processor() or platform.machine()}), {args.precision}, "
        f"{args.layers} cells, batch {args.batch}, {args.rounds} interleaved rounds, {torch.get_num_threads()} threads"
    )
    rows = time_layouts(args.channels, args.layers, args.batch, args.rounds, args.device, args.precision, args.networks)
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
