"""Peak memory of one search step (``method.step``) per method, each measured in a fresh process, phase by phase.

Phases ``build`` (supernet and method setup), ``first_step`` and ``step`` (the steady state, the number to
compare), each with its start, peak and increment; on CPU the resident set, so compare increments::

    python -m egsbench.benchmark.bench_memory                          # C=16, 8 cells, batch 64, every method
    python -m egsbench.benchmark.bench_memory --channels 4 --layers 5 --batch 8 --methods egs_m1 darts_1st

Method and reading: docs/benchmarks.md#bench_memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from .bench_methods import BASELINE, VARIANTS, make_step
from .memory import MB, MemoryProbe
from .speed import MEMORY_FORMATS

__all__ = ["PHASES", "RATIO_TARGET", "MemoryProbe", "main", "measure", "measure_in_subprocess", "memory_table"]

PHASES = ("build", "first_step", "step")
RATIO_TARGET = 1 / 3  # EGS M = 1 / DARTS at batch 64
# glibc keeps freed heap pages, so a second step would reuse the first's without raising RSS. In the worker,
# allocations above 64 KiB are mmapped (unmapped on free) and the heap is trimmed down to 128 KiB of slack,
# so each phase starts from what is live. (Fixing the threshold also stops glibc from raising it adaptively.)
GLIBC_RETURN_MEMORY = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}


def measure(
    name: str,
    channels: int,
    layers: int,
    batch: int,
    device: str,
    time_steps: int = 0,
    memory_format: str = "contiguous",
) -> dict:
    """Measure the phases of one method in this process (call it in a fresh one: see ``measure_in_subprocess``).

    Args:
        time_steps: after the phases, also time this many more steps (``step_s``: their median seconds).
    """
    dev = torch.device(device)
    probe = MemoryProbe(dev)
    phases = {}

    def phase(label: str, run):
        probe.start()
        out = run()
        start, peak = probe.stop()
        phases[label] = {"start_mb": start / MB, "peak_mb": peak / MB, "increment_mb": (peak - start) / MB}
        return out

    step = phase("build", lambda: make_step(name, channels, layers, batch, dev, memory_format))
    phase("first_step", step)
    phase("step", step)
    result = {"method": name, "phases": phases, "how": probe.how, "device": str(dev), "memory_format": memory_format}
    if time_steps:
        times = []
        for _ in range(time_steps):
            begin = time.perf_counter()
            step()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append(time.perf_counter() - begin)
        result["step_s"] = statistics.median(times)
    return result


def measure_in_subprocess(
    name: str,
    channels: int,
    layers: int,
    batch: int,
    device: str = "cpu",
    time_steps: int = 0,
    threads: int | None = None,
    timeout: float = 1800,
    memory_format: str = "contiguous",
) -> dict:
    """``measure`` in a fresh Python process; its result, or an ``error`` entry when it failed."""
    if name not in VARIANTS:
        raise ValueError(f"unknown method variant {name!r}; valid variants: {', '.join(VARIANTS)}")
    command = [sys.executable, "-m", "egsbench.benchmark.bench_memory", "--worker", name]
    command += ["--channels", str(channels), "--layers", str(layers), "--batch", str(batch), "--device", device]
    command += ["--time-steps", str(time_steps), "--memory-format", memory_format]
    command += ["--threads", str(threads)] if threads else []
    env = os.environ | GLIBC_RETURN_MEMORY
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"method": name, "error": (done.stderr or done.stdout).strip()[-2000:]}
    return json.loads(lines[-1])


def memory_table(results: list[dict]) -> dict:
    """Per method, the ``step`` phase's peak and increment, and EGS M = 1's ratios to DARTS (first order)."""
    steps = {r["method"]: r["phases"]["step"] for r in results if "phases" in r}
    out = {"step_mb": steps}
    if "egs_m1" in steps and BASELINE in steps:
        egs, darts = steps["egs_m1"], steps[BASELINE]
        out["egs_m1/darts_1st"] = {
            key: egs[key] / darts[key] if darts[key] > 0 else None for key in ("peak_mb", "increment_mb")
        } | {"target": RATIO_TARGET}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--memory-format", default="contiguous", choices=MEMORY_FORMATS)
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: measure one method, print JSON
    parser.add_argument("--time-steps", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        result = measure(
            args.worker, args.channels, args.layers, args.batch, args.device, args.time_steps, args.memory_format
        )
        print(json.dumps(result))
        return 0
    results = []
    print(
        f"peak memory of one search step, C={args.channels}, {args.layers} cells, batch {args.batch}, {args.device}, "
        f"{args.memory_format}"
    )
    for name in args.methods:
        r = measure_in_subprocess(
            name,
            args.channels,
            args.layers,
            args.batch,
            args.device,
            threads=args.threads,
            memory_format=args.memory_format,
        )
        results.append(r)
        if "error" in r:
            print(f"  {name:10s} FAILED: {r['error'].splitlines()[-1] if r['error'] else '?'}")
            continue
        cells = "   ".join(
            f"{p} {v['increment_mb']:8.1f} MB (peak {v['peak_mb']:8.1f})" for p, v in r["phases"].items()
        )
        print(f"  {name:10s} {cells}")
    table = memory_table(results)
    if "egs_m1/darts_1st" in table:
        ratio = table["egs_m1/darts_1st"]
        shown = {k: "n/a" if ratio[k] is None else f"{ratio[k]:.3f}" for k in ("peak_mb", "increment_mb")}
        print(
            f"  EGS M=1 / DARTS (step): peak {shown['peak_mb']}, increment {shown['increment_mb']} "
            f"(target <= {RATIO_TARGET:.3f}; {results[0].get('how', '')})"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args) | {"worker": None}, "results": results, "table": table}, f, indent=1)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
