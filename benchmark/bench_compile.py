"""What ``compile: true`` buys the search step, per method: inductor against eager, side by side in one process.

Dense methods (DARTS first and second order, SNAS; ``SearchMethod.dense_weights``) compile the supernet's
``forward_active`` once (:func:`~egsbench.benchmark.speed.compile_supernet`, what a run does): the first compiled
step's seconds (the compilation) are reported apart, then eager and compiled steps are timed interleaved round by
round. The sampling methods (EGS, GDAS) keep an eager supernet; for them the script measures the reason: the
same compiled forward run under dynamo's graph-only backend over ``--sample-steps`` steps, counting the distinct
active-op sets the samples asked for and the graphs dynamo had to make (one per set, up to its recompile limit,
then eager).

    python -m egsbench.benchmark.bench_compile                    # C=4, 3 cells, batch 16: the smoke supernet
    python -m egsbench.benchmark.bench_compile --methods darts_1st --channels 8 --layers 5 --json out.json

Inductor's C++ build of a whole supernet takes minutes on a small CPU (a C=8, 5-cell build did not finish in
15 minutes on a loaded 2-core machine), so the default size is the smoke supernet's. Reading:
docs/benchmarks.md#bench_compile.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from ..methods import METHODS
from .bench_methods import VARIANTS, make_method, method_step
from .speed import compile_supernet
from .timing import time_interleaved

__all__ = ["DENSE", "SAMPLED", "main", "sample_graphs", "time_compiled"]

# bench_methods.VARIANTS by what compile: true does with their supernet (SearchMethod.dense_weights)
DENSE = tuple(name for name, (method, _) in VARIANTS.items() if METHODS.get(method).dense_weights)
SAMPLED = tuple(name for name in VARIANTS if name not in DENSE)


def time_compiled(
    name: str,
    channels: int,
    layers: int,
    batch: int,
    rounds: int,
    memory_format: str,
    device: str | torch.device = "cpu",
) -> dict:
    """Eager and inductor-compiled ``method.step`` of one dense variant: compile seconds and interleaved medians
    (each step syncs on its loss)."""
    torch._dynamo.reset()
    eager = make_method(name, channels, layers, device, memory_format)
    compiled = make_method(name, channels, layers, device, memory_format)
    if not compile_supernet(compiled.ctx.model):
        raise ValueError(f"{name}'s supernet has no compiled search forward")
    steps = {"eager": method_step(eager, batch, device), "compiled": method_step(compiled, batch, device)}
    before = _unique_graphs()
    start = time.perf_counter()
    steps["compiled"]()  # the compilation (and the first step)
    compile_s = time.perf_counter() - start
    graphs = _unique_graphs() - before
    result = time_interleaved(steps, rounds, "eager", {"variant": name})
    recompiled = _unique_graphs() - before - graphs
    return {
        "variant": name,
        "compile_s": compile_s,
        "graphs": graphs,
        "graphs_after_first_step": recompiled,
        "eager_s": result["median_s"]["eager"],
        "compiled_s": result["median_s"]["compiled"],
        "speedup": result["median_s"]["eager"] / result["median_s"]["compiled"],
        "times_s": result["times_s"],
    }


def sample_graphs(
    name: str,
    channels: int,
    layers: int,
    batch: int,
    steps: int,
    memory_format: str,
    device: str | torch.device = "cpu",
) -> dict:
    """A sampling variant's supernet forward compiled with dynamo's graph-only backend over ``steps`` steps: the
    distinct active-op sets its samples asked for and the graphs dynamo made for them."""
    torch._dynamo.reset()
    method = make_method(name, channels, layers, device, memory_format)
    model = method.ctx.model
    seen: set = set()
    compiled = torch.compile(model.forward_active, backend="eager")

    def forward_active(x, weights, active, drop_prob):
        seen.add(tuple(sorted((t, tuple(map(tuple, rows))) for t, rows in active.items())))
        return compiled(x, weights, active, drop_prob)

    model.forward_active = forward_active  # what compile_supernet would compile, with the sets it is called with
    before = _unique_graphs()
    step = method_step(method, batch, device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return {
        "variant": name,
        "steps": steps,
        "distinct_active_sets": len(seen),
        "graphs": _unique_graphs() - before,
        "recompile_limit": _recompile_limit(),
        "seconds": time.perf_counter() - start,
    }


def _unique_graphs() -> int:
    """Graphs dynamo has made in this process (a private module: imported where used, not with this one)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def _recompile_limit() -> int:
    config = torch._dynamo.config
    return config.recompile_limit if hasattr(config, "recompile_limit") else config.cache_size_limit  # torch < 2.6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=[*DENSE, *SAMPLED], choices=[*DENSE, *SAMPLED])
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sample-steps", type=int, default=10, help="steps of each sampling variant under dynamo")
    parser.add_argument("--memory-format", default="channels_last", choices=("contiguous", "channels_last"))
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    size = (
        f"C={args.channels}, {args.layers} cells, batch {args.batch}, {args.device}, {torch.get_num_threads()} threads"
    )
    results = []
    print(f"compile: true, one search step (method.step), {size}, {args.memory_format}, {args.rounds} rounds")
    for name in args.methods:
        if name in DENSE:
            r = time_compiled(
                name, args.channels, args.layers, args.batch, args.rounds, args.memory_format, args.device
            )
            print(
                f"  {name:10s} compile {r['compile_s']:7.1f} s ({r['graphs']} graphs, {r['graphs_after_first_step']}"
                f" after)  eager {r['eager_s']:.3f} s  compiled {r['compiled_s']:.3f} s  speed-up {r['speedup']:.2f}x",
                flush=True,
            )
        else:
            r = sample_graphs(
                name, args.channels, args.layers, args.batch, args.sample_steps, args.memory_format, args.device
            )
            print(
                f"  {name:10s} not compiled: {r['steps']} steps sampled {r['distinct_active_sets']} distinct active-op"
                f" sets; dynamo made {r['graphs']} graphs (recompile limit {r['recompile_limit']}, then eager)",
                flush=True,
            )
        results.append(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args) | {"threads": torch.get_num_threads()}, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
