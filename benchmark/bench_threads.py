"""Two runs side by side on one machine: why they slow each other far more than 2x, and the fix.

Times the same fixed supernet work in fresh processes: one alone, two at once with torch's default threads,
and two at once with the sweep's budget (``cores // jobs`` threads each, ``OMP_WAIT_POLICY=PASSIVE``)::

    python -m egsbench.benchmark.bench_threads --steps 8 --json results/benchmarks/threads.json

Method and reading: docs/benchmarks.md#bench_threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

__all__ = ["main", "measure"]

WORKER = """
import sys, time, torch, torch.nn.functional as F
import egsbench
steps = int(sys.argv[1])
sn = egsbench.build_supernet("darts", "darts", "cifar10", channels=8, layers=5, method_config={"order": 1})
space = sn.context.space
x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
w = {t: torch.full((len(space.edges), len(space.ops)), 1.0 / len(space.ops)) for t in space.cell_types}
F.cross_entropy(sn.model(x, w), y).backward()  # warm-up
start = time.perf_counter()
for _ in range(steps):
    sn.model.zero_grad(set_to_none=True)
    F.cross_entropy(sn.model(x, w), y).backward()
print(time.perf_counter() - start, torch.get_num_threads())
"""


def _workers(count: int, steps: int, env: dict) -> list[tuple[float, int]]:
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(steps)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    results = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"worker failed with exit status {p.returncode}")
        seconds, threads = out.split()
        results.append((float(seconds), int(threads)))
    return results


def measure(steps: int = 8) -> dict:
    """Seconds per worker for the three settings (docs/benchmarks.md#bench_threads)."""
    cores = os.cpu_count() or 1
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    budget = {
        **base,
        "OMP_NUM_THREADS": str(max(1, cores // 2)),
        "MKL_NUM_THREADS": str(max(1, cores // 2)),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    settings = {
        "alone": (1, base),
        "side_by_side_default": (2, base),
        "side_by_side_budget": (2, budget),
    }
    rows = {}
    for name, (count, env) in settings.items():
        start = time.perf_counter()
        workers = _workers(count, steps, env)
        wall = time.perf_counter() - start
        per_worker = max(s for s, _ in workers)
        rows[name] = {
            "workers": count,
            "threads_per_worker": workers[0][1],
            "seconds_per_worker": per_worker,
            "wall_s": wall,
        }
    for row in rows.values():
        row["slowdown_vs_alone"] = row["seconds_per_worker"] / rows["alone"]["seconds_per_worker"]
    return {
        "machine": {"cores": cores, "platform": platform.platform(), "processor": platform.processor()},
        "steps": steps,
        "settings": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    result = measure(args.steps)
    print(f"{'setting':<24} {'workers':>7} {'threads':>7} {'s/worker':>9} {'slowdown':>9}")
    for name, row in result["settings"].items():
        print(
            f"{name:<24} {row['workers']:>7} {row['threads_per_worker']:>7} {row['seconds_per_worker']:>9.2f} "
            f"{row['slowdown_vs_alone']:>8.2f}x"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
