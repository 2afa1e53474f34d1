"""Where a search step's time goes: ``torch.profiler`` over one ``method.step``, ops by self time.

One untimed step warms up (lazy optimiser state, oneDNN primitive caches), then one profiled step
per memory layout; the table lists the ops with the most self time, their share and call counts.

    python -m egsbench.benchmark.profile_step                                  # DARTS 1st order, C=16, 6 cells, B=32
    python -m egsbench.benchmark.profile_step --variant egs_m7 --formats channels_last --rows 10
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from .bench_methods import VARIANTS, make_step
from .speed import MEMORY_FORMATS

__all__ = ["main", "profile_step"]


def profile_step(variant: str, channels: int, layers: int, batch: int, memory_format: str, rows: int) -> dict:
    """Self time per op of one ``method.step`` (after one warm-up step): the top ``rows`` and the total."""
    step = make_step(variant, channels, layers, batch, "cpu", memory_format)
    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    top = [
        {"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total, "calls": e.count}
        for e in events[:rows]
    ]
    return {"variant": variant, "memory_format": memory_format, "total_ms": total / 1e3, "top": top}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="darts_1st", choices=list(VARIANTS))
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--formats", nargs="+", default=list(MEMORY_FORMATS), choices=MEMORY_FORMATS)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for fmt in args.formats:
        r = profile_step(args.variant, args.channels, args.layers, args.batch, fmt, args.rows)
        print(
            f"{args.variant}, C={args.channels}, {args.layers} cells, batch {args.batch}, {fmt}, "
            f"{torch.get_num_threads()} threads: {r['total_ms']:.0f} ms of self CPU time in one step"
        )
        for t in r["top"]:
            print(f"  {t['op']:44s} {t['self_ms']:9.1f} ms  {100 * t['share']:5.1f} %  {t['calls']:6d} calls")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
