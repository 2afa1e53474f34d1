"""Side-by-side timing for the benchmark scripts: variants interleaved round by round, medians and ratios."""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable

import torch

from .records import write_json

__all__ = ["common_draws", "print_result", "sampling_interval", "sync", "time_interleaved"]


def sync(device: torch.device | str) -> None:
    """Wait for ``device``'s queued work (CUDA runs asynchronously; a CPU has nothing to wait for)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(
    variants: dict[str, Callable[[], object]],
    rounds: int,
    baseline: str,
    config: dict,
    label: str | None = None,
    repeats: dict[str, int] | None = None,
) -> dict:
    """Call each variant once untimed (warm-up), then once per round in turn, so noise hits them alike.

    ``repeats`` (name -> n) has a variant called ``n`` times back to back per round, its time for the round the
    mean of those calls: for a step whose cost varies from call to call (a sampled architecture runs other ops
    each time), so that each round's figure estimates its mean. Each of those calls is timed on its own and
    kept (``calls_s``): their spread is what a mean over them is uncertain by.

    Returns the config (with the torch thread count and the repeats), each variant's median seconds, its ratio
    to the ``baseline`` variant (under ``ratio_to_<label>``), the raw round times and, for repeated variants,
    every call's time.
    """
    repeats = {name: n for name, n in (repeats or {}).items() if name in variants}
    if any(n < 1 for n in repeats.values()):
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times: dict[str, list[float]] = {name: [] for name in variants}
    calls: dict[str, list[float]] = {name: [] for name in repeats}
    for run in variants.values():
        run()
    for _ in range(rounds):
        for name, run in variants.items():
            these = []
            for _ in range(repeats.get(name, 1)):
                start = time.perf_counter()
                run()
                these.append(time.perf_counter() - start)
            times[name].append(statistics.fmean(these))
            if name in calls:
                calls[name] += these
    medians = {name: statistics.median(t) for name, t in times.items()}
    config = config | {"rounds": rounds, "threads": torch.get_num_threads()} | ({"repeats": repeats} if repeats else {})
    return {
        "config": config,
        "median_s": medians,
        f"ratio_to_{label or baseline}": {name: m / medians[baseline] for name, m in medians.items()},
        "times_s": times,
    } | ({"calls_s": calls} if calls else {})


def print_result(result: dict, title: str, json_path: str | None = None) -> None:
    cfg = result["config"]
    print(
        f"{title}, C={cfg['channels']}, {cfg['layers']} cells, batch {cfg['batch']}, "
        f"{cfg['rounds']} interleaved rounds, {cfg['threads']} threads"
    )
    ratio_key = next(k for k in result if k.startswith("ratio_to_"))
    for name, median in result["median_s"].items():
        print(f"  {name:14s} median {median:8.3f} s   {ratio_key.replace('_', ' ')} {result[ratio_key][name]:.3f}")
    if json_path:
        write_json(json_path, result)


def sampling_interval(num: list[float], den: list[float], target: float | None = None, paired: bool = False) -> dict:
    """The ratio of the mean of ``num`` to the mean of ``den`` (seconds per call) with its 95 % interval.

    A sampled step's cost moves with what was drawn (xautodl's GDAS at batch 32: 0.50-0.79 s per call), so a
    ratio of sampled steps is an estimate of the ratio of their expected costs, uncertain by the spread of the
    draws. Independent sides: the delta method's standard error ``r * sqrt((se_n / m_n)^2 + (se_d / m_d)^2)``,
    ``se = sd / sqrt(calls)`` (a side with one value counts as exact). ``paired`` (call ``i`` of each ran the
    same draw: :func:`common_draws`): the ratio estimator's
    ``sd(num_i - r den_i) / (sqrt(n) mean(den))``, which keeps what the two have in common out of the error.
    Then the normal 1.96. ``verdict`` places the interval against the target: ``below`` (all of it under the
    target: met whatever the draws), ``above`` (all of it over: missed), or ``across`` (the draws cannot say at
    that many calls).
    """

    def mean_se(values: list[float]) -> tuple[float, float]:
        m = statistics.fmean(values)
        return m, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0)

    (mn, sn), (md, sd) = mean_se(num), mean_se(den)
    r = mn / md
    if paired:
        if len(num) != len(den):
            raise ValueError(f"paired samples need as many calls on each side, got {len(num)} and {len(den)}")
        se = mean_se([a - r * b for a, b in zip(num, den, strict=True)])[1] / md
    else:
        se = r * math.hypot(sn / mn, sd / md)
    half = 1.96 * se
    out = {"mean_ratio": r, "ci95": [r - half, r + half], "calls": [len(num), len(den)], "paired": paired}
    if isinstance(target, float):
        out["verdict"] = "below" if r + half <= target else "above" if r - half > target else "across"
    return out


def common_draws(sample: Callable[..., dict]) -> Callable[[], dict]:
    """A weight function for one timed variant whose ``i``-th call returns ``sample(generator=...)`` drawn with
    the seed ``i``: the functions made from one ``sample`` for several variants draw the same architectures in the
    same order, so call ``i`` of each runs the same ops and their calls pair up (:func:`sampling_interval` with
    ``paired``). Each call draws afresh (its own tensors, with their own graph to the alphas), so every variant's
    backward runs through its own draw; a variant called alone draws seeds 0, 1, ... as well."""
    calls = itertools.count()
    return lambda: sample(generator=torch.Generator().manual_seed(next(calls)))
