"""Step time and peak memory of every method against batch size, channels and cells: a CSV, a plot and the machine.

One axis varies at a time around a base configuration (the others stay at the base). Each
(method, configuration) point runs in a fresh process (``bench_memory.measure_in_subprocess``):
the supernet is built, one step warms up, the second step's memory is measured, then
``--time-steps`` more steps are timed (median). Written under ``--out``:

- ``<name>.csv``: one row per point: method, axis, batch, channels, layers, step_s, step_increment_mb,
  step_peak_mb (on CPU the peak includes the interpreter and torch: compare increments);
- ``<name>.png``: time (top) and memory increment (bottom) against each axis, one line per method;
- ``<name>.json``: the machine (platform, CPU, threads, GPU, package versions, git SHA), the grid and the rows.

    python -m egsbench.benchmark.bench_scaling                       # small grid, a few minutes on a CPU
    python -m egsbench.benchmark.bench_scaling --base 16,8,64 --batches 16 32 64 128 --channels 8 16 32 \\
        --cells 5 8 14 --device cuda --name scaling-h100             # the paper-size grid on a GPU
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

import torch

from .bench_memory import measure_in_subprocess
from .bench_methods import VARIANTS
from .speed import MEMORY_FORMATS

__all__ = ["AXES", "grid", "machine", "main", "plot", "run_grid"]

AXES = ("batch", "channels", "layers")
FIELDS = ("method", "axis", "batch", "channels", "layers", "step_s", "step_increment_mb", "step_peak_mb", "error")


def grid(base: tuple[int, int, int], values: dict[str, list[int]]) -> list[tuple[str, dict[str, int]]]:
    """``(axis, {channels, layers, batch})`` points: each axis's values with the others at ``base`` (C, L, B).

    Examples:
        >>> [p for _, p in grid((8, 5, 16), {"batch": [8, 16], "channels": [], "layers": []})]
        [{'channels': 8, 'layers': 5, 'batch': 8}, {'channels': 8, 'layers': 5, 'batch': 16}]
    """
    channels, layers, batch = base
    points = []
    for axis in AXES:
        for v in values.get(axis, []):
            points.append((axis, {"channels": channels, "layers": layers, "batch": batch} | {axis: v}))
    return points


def machine(device: str) -> dict:
    """What ran the grid: platform, CPU, threads, GPU, package versions and git SHA."""
    from .records import manifest

    info = manifest(device) | {
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def run_grid(
    methods: list[str],
    points: list[tuple[str, dict[str, int]]],
    device: str,
    time_steps: int,
    threads: int | None = None,
    progress: bool = True,
    memory_format: str = "contiguous",
) -> list[dict]:
    """One row per (method, point); a configuration shared by several axes is measured once."""
    cache: dict[tuple, dict] = {}
    rows = []
    for method in methods:
        for axis, cfg in points:
            key = (method, cfg["channels"], cfg["layers"], cfg["batch"])
            if key not in cache:
                cache[key] = measure_in_subprocess(
                    method, **cfg, device=device, time_steps=time_steps, threads=threads, memory_format=memory_format
                )
            r = cache[key]
            step = r.get("phases", {}).get("step", {})
            row = {
                "method": method,
                "axis": axis,
                **cfg,
                "step_s": r.get("step_s"),
                "step_increment_mb": step.get("increment_mb"),
                "step_peak_mb": step.get("peak_mb"),
                "error": (r.get("error") or "").splitlines()[-1:] or None,
            }
            row["error"] = row["error"][0] if row["error"] else None
            rows.append(row)
            if progress:
                shown = row["error"] or f"{row['step_s'] or 0:.3f} s, {row['step_increment_mb'] or 0:.1f} MB"
                print(
                    f"  {method:10s} {axis:8s} C={cfg['channels']:<3d} L={cfg['layers']:<3d} B={cfg['batch']:<4d} "
                    f"{shown}",
                    flush=True,
                )
    return rows


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Time and memory against each axis, one line per method (matplotlib, no display needed)."""
    from .plots import subplots

    fig, axes = subplots(2, len(AXES), figsize=(4 * len(AXES), 6.5), squeeze=False)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for col, axis in enumerate(AXES):
        for row_i, (key, label) in enumerate((("step_s", "step time (s)"), ("step_increment_mb", "step memory (MB)"))):
            ax = axes[row_i][col]
            for method in methods:
                pts = sorted(
                    (r[axis], r[key])
                    for r in rows
                    if r["method"] == method and r["axis"] == axis and r[key] is not None
                )
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=method)
            ax.set_xlabel({"layers": "cells"}.get(axis, axis))
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="8,5,16", help="C,cells,batch held fixed while another axis varies")
    parser.add_argument("--batches", type=int, nargs="*", default=[8, 16, 32])
    parser.add_argument("--channels", type=int, nargs="*", default=[4, 8, 16])
    parser.add_argument("--cells", type=int, nargs="*", default=[5, 8])
    parser.add_argument("--methods", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--time-steps", type=int, default=3, help="timed steps per point (median)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--memory-format",
        default="channels_last",
        choices=MEMORY_FORMATS,
        help="the supernets' layout (the config key memory_format)",
    )
    parser.add_argument("--out", default="results/benchmarks", help="folder for the CSV, PNG and JSON")
    parser.add_argument("--name", default="scaling", help="file stem of the outputs")
    args = parser.parse_args(argv)
    try:
        base = tuple(int(v) for v in args.base.split(","))
        if len(base) != 3:
            raise ValueError
    except ValueError:
        parser.error(f"--base must be three integers C,cells,batch, got {args.base!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    points = grid(base, {"batch": args.batches, "channels": args.channels, "layers": args.cells})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"scaling grid: {len(args.methods)} methods x {len(points)} points on {args.device}, base C,L,B = {base}")
    rows = run_grid(args.methods, points, args.device, args.time_steps, args.threads, memory_format=args.memory_format)
    with open(out / f"{args.name}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    info = machine(args.device)
    where = info.get("gpu") or f"{info['processor']}, {info['cpu_count']} CPUs, {info['torch_threads']} threads"
    plot(
        rows,
        out / f"{args.name}.png",
        f"one search step per method ({args.memory_format}), base C,L,B = {base}; {where}",
    )
    sidecar = {"machine": info, "config": vars(args) | {"base": base}, "rows": rows}
    (out / f"{args.name}.json").write_text(json.dumps(sidecar, indent=1))
    print(f"wrote {out / args.name}.csv, .png and .json")
    return 1 if any(r["error"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
