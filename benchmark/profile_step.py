"""Where a search step's time goes: ``torch.profiler`` over one ``method.step``, ops by self time.

One untimed step warms up (lazy optimiser state, oneDNN primitive caches), then one profiled step
per memory layout; the table lists the ops with the most self time, their share and call counts.

``--aten`` times every aten call of ``--steps`` steps instead (forward and backward, on the CPU), each call alone
(:func:`aten_timer`): the ops' own time without the profiler's events, grouped by op or, with ``--by-input``, by
op and the shapes and layouts of its tensor inputs (``cl`` channels-last, ``c`` contiguous, ``s`` strided: a
kernel handed a layout it has no fast path for shows as its own row). ``--warm`` runs each call twice more on
copies of its inputs, now in cache, and times the second (``repeat ms``): ``first/repeat`` well above 1 is a
call that waited on memory for its inputs (saved activations the backward reads long after the forward wrote
them). The repeat's output is allocated anew, so the two also differ in where their outputs land: small calls
can read below 1. The timer's own work and the repeats move what is in cache for the calls after them: read the
shares and ratios, not the total. A sampling method draws a new architecture every step, so its rows are
per-step means.

    python -m egsbench.benchmark.profile_step                                  # DARTS 1st order, C=16, 6 cells, B=32
    python -m egsbench.benchmark.profile_step --variant egs_m7 --formats channels_last --rows 10
    python -m egsbench.benchmark.profile_step --variant gdas --formats channels_last --aten --warm --steps 4
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile

from .bench_methods import VARIANTS, make_step
from .records import write_json
from .speed import MEMORY_FORMATS

__all__ = ["AtenRow", "aten_profile", "aten_table", "aten_timer", "main", "profile_step"]


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


def layout(t: torch.Tensor) -> str:
    """``cl`` (dense channels-last, 4-D, not also contiguous), ``c`` (contiguous) or ``s`` (any other strides)."""
    if t.is_contiguous():
        return "c"
    return "cl" if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) else "s"


def _inputs(args) -> str:
    """Each tensor argument as ``shape:layout`` (``32x16x32x32:cl``), a list of them in brackets (``cat``'s)."""

    def describe(a) -> str | None:
        if isinstance(a, torch.Tensor):
            return f"{'x'.join(map(str, a.shape)) or 'scalar'}:{layout(a)}"
        if isinstance(a, (list, tuple)) and a and all(isinstance(t, torch.Tensor) for t in a):
            return "[" + " ".join(map(describe, a)) + "]"
        return None

    return " ".join(d for d in map(describe, args) if d is not None)


def _repeatable(func) -> bool:
    """Whether ``func`` may run again: it draws no random numbers (a repeat would move the generator, and with it
    the draws after it)."""
    return torch.Tag.nondeterministic_seeded not in func.tags


def _copy(a):
    """A tensor as a copy with its strides (the same kernel path), a list of them as a list of copies; anything
    else, and an expanded tensor (a stride 0: no op writes one), as it is. A repeat must not write what the step
    holds, and schemas do not say every write (``native_batch_norm``'s running statistics)."""
    if isinstance(a, (list, tuple)):
        return type(a)(_copy(x) for x in a)
    if not isinstance(a, torch.Tensor) or any(st == 0 and n > 1 for st, n in zip(a.stride(), a.shape, strict=True)):
        return a
    return torch.empty_strided(a.shape, a.stride(), dtype=a.dtype, device=a.device).copy_(a)


@dataclass
class AtenRow:
    """One key's sums under :func:`aten_timer`: its calls and their seconds, and the timed repeats of those calls
    (fewer than ``calls`` where a call drew random numbers or its inputs could not be copied)."""

    seconds: float = 0.0
    calls: int = 0
    repeat_seconds: float = 0.0
    repeats: int = 0


def aten_timer(by_input: bool = False, warm: bool = False):
    """A ``TorchDispatchMode`` (a context manager) that times every aten call made under it, each call alone, and
    sums them per key in ``rows``: ``{(op, inputs): AtenRow}``, where ``inputs`` is ``""`` or, with ``by_input``,
    the call's tensor inputs' shapes and layouts. The forward's calls
    and the backward's (which autograd makes on this thread on a CPU) both count; a call's time includes what its
    kernel does inside, and none of the Python or autograd bookkeeping between calls.

    With ``warm``, each call that draws no random numbers then runs twice more on copies of its inputs (so the
    step's values and the modules' state are as without the timer), and the second repeat is timed too: its
    inputs are in cache then."""
    from torch.utils._python_dispatch import TorchDispatchMode  # private to torch: imported where used

    class AtenTimer(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.rows: dict[tuple[str, str], AtenRow] = defaultdict(AtenRow)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            start = time.perf_counter()
            out = func(*args, **kwargs)
            seconds = time.perf_counter() - start
            row = self.rows[(str(func), _inputs(args) if by_input else "")]
            row.seconds += seconds
            row.calls += 1
            if warm and _repeatable(func):
                try:
                    rep_args, rep_kwargs = _copy(args), {k: _copy(v) for k, v in kwargs.items()}
                except RuntimeError:  # a tensor whose elements overlap some other way: this call is not repeated
                    return out
                func(*rep_args, **rep_kwargs)
                start = time.perf_counter()
                func(*rep_args, **rep_kwargs)
                row.repeat_seconds += time.perf_counter() - start
                row.repeats += 1
            return out

    return AtenTimer()


def aten_profile(
    variant: str,
    channels: int,
    layers: int,
    batch: int,
    memory_format: str,
    rows: int,
    steps: int = 1,
    by_input: bool = False,
    warm: bool = False,
) -> dict:
    """:func:`aten_timer` over ``steps`` calls of ``method.step`` (after one warm-up step and ``steps`` untimed
    ones, whose mean is ``step_s``): the top ``rows`` keys by time, each per step, and the totals."""
    step = make_step(variant, channels, layers, batch, "cpu", memory_format)
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    step_s = (time.perf_counter() - start) / steps
    timer = aten_timer(by_input, warm)
    with timer:
        for _ in range(steps):
            step()
    facts = {"variant": variant, "memory_format": memory_format, "steps": steps, "step_s": step_s}
    return facts | aten_table(timer.rows, steps, rows)


def aten_table(timed: dict[tuple[str, str], AtenRow], steps: int, rows: int) -> dict:
    """:func:`aten_timer`'s ``rows`` over ``steps`` steps as per-step figures: ``top``, the ``rows`` keys with the
    most time, slowest first, and the totals over every key (``aten_s``, ``calls``)."""
    total = sum(r.seconds for r in timed.values())
    ranked = sorted(timed.items(), key=lambda kv: kv[1].seconds, reverse=True)
    top = [
        {
            "op": op,
            "inputs": inputs,
            "ms": 1e3 * r.seconds / steps,
            "share": r.seconds / total,
            "calls": r.calls / steps,
            # the same calls' second repeats; None unless every call was repeated (AtenRow)
            "warm_ms": 1e3 * r.repeat_seconds / steps if r.repeats == r.calls else None,
        }
        for (op, inputs), r in ranked[:rows]
    ]
    return {"aten_s": total / steps, "calls": sum(r.calls for r in timed.values()) / steps, "top": top}


def print_aten(r: dict, channels: int, layers: int, batch: int) -> None:
    print(
        f"{r['variant']}, C={channels}, {layers} cells, batch {batch}, {r['memory_format']}, "
        f"{torch.get_num_threads()} threads, {r['steps']} steps: {1e3 * r['step_s']:.1f} ms per step untimed; under "
        f"the timer its aten calls take {1e3 * r['aten_s']:.1f} ms per step ({r['calls']:.0f} calls)"
    )
    repeats = any(t["warm_ms"] is not None for t in r["top"])
    head = f"  {'op':46s} {'ms/step':>8} {'share':>6} {'calls/step':>10}"
    print(head + (f" {'repeat ms':>9} {'first/repeat':>12}" if repeats else "") + "  inputs")
    for t in r["top"]:
        line = f"  {t['op']:46s} {t['ms']:8.2f} {100 * t['share']:5.1f}% {t['calls']:10.1f}"
        if repeats:
            w = t["warm_ms"]
            line += f" {'-':>9} {'-':>12}" if w is None else f" {w:9.2f} {t['ms'] / w:12.2f}"
        print(line + ("  " + t["inputs"] if t["inputs"] else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="darts_1st", choices=list(VARIANTS))
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--formats", nargs="+", default=list(MEMORY_FORMATS), choices=MEMORY_FORMATS)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--aten", action="store_true", help="time each aten call instead of torch.profiler")
    parser.add_argument("--steps", type=int, default=1, help="with --aten: steps timed (per-step means)")
    parser.add_argument("--by-input", action="store_true", help="with --aten: a row per op and input shapes/layouts")
    parser.add_argument("--warm", action="store_true", help="with --aten: also each call again on warm inputs")
    parser.add_argument("--json", default=None, help="with --aten: also write the results to this file")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    extras = [f for f in ("steps", "by_input", "warm", "json") if getattr(args, f) != parser.get_default(f)]
    if extras and not args.aten:
        parser.error(f"--{extras[0].replace('_', '-')} needs --aten")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for fmt in args.formats:
        if args.aten:
            r = aten_profile(
                args.variant,
                args.channels,
                args.layers,
                args.batch,
                fmt,
                args.rows,
                args.steps,
                args.by_input,
                args.warm,
            )
            print_aten(r, args.channels, args.layers, args.batch)
            results.append(r)
            continue
        r = profile_step(args.variant, args.channels, args.layers, args.batch, fmt, args.rows)
        print(
            f"{args.variant}, C={args.channels}, {args.layers} cells, batch {args.batch}, {fmt}, "
            f"{torch.get_num_threads()} threads: {r['total_ms']:.0f} ms of self CPU time in one step"
        )
        for t in r["top"]:
            print(f"  {t['op']:44s} {t['self_ms']:9.1f} ms  {100 * t['share']:5.1f} %  {t['calls']:6d} calls")
    if args.json:
        write_json(args.json, {"threads": torch.get_num_threads(), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
