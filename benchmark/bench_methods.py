"""Time one full search step (``method.step``: every forward, backward and update) of each registered method.

All methods run on supernets of one configuration, in one process, interleaved round by
round so that machine noise hits them alike; the report is the median seconds per step and
the ratio to DARTS first order.

    python -m egsbench.benchmark.bench_methods --channels 8 --layers 5 --batch 32 --rounds 3

The same variants are pytest-benchmark cases in ``tests/benchmarks`` (one after another, saved as JSON
so two commits compare): ``pytest tests/benchmarks --benchmark-only --benchmark-autosave``, then
``--benchmark-compare``.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..methods import METHODS, SearchConfig, SearchContext, StepStats
from ..tasks.spaces import SPACES, LossOutput, SearchNetwork
from .speed import apply_memory_format
from .timing import print_result, time_interleaved

__all__ = ["BASELINE", "VARIANTS", "fixed_batch", "main", "make_method", "make_step", "method_step", "time_methods"]

VARIANTS = {  # name -> (method, config overrides)
    "egs_m7": ("egs", {"M": 7}),
    "egs_m1": ("egs", {"M": 1}),
    "darts_1st": ("darts", {"order": 1}),
    "darts_2nd": ("darts", {"order": 2}),
    "snas": ("snas", {}),
    "gdas": ("gdas", {}),
    "random_ws": ("random", {}),
}
BASELINE = "darts_1st"


def _loss(model, batch, weights) -> LossOutput:
    x, y = batch
    return LossOutput(F.cross_entropy(model(x, weights), y))


def _batch(g: torch.Generator, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)


def fixed_batch(batch: int, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The seeded batch the benchmarks that time a bare forward + backward train on, on ``device``: ``(B, 3, 32, 32)``
    random images and ``(B,)`` labels (the first of :func:`method_step`'s two)."""
    g = torch.Generator().manual_seed(0)
    return tuple(t.to(device) for t in _batch(g, batch))


def make_method(
    name: str, channels: int, layers: int, device: str | torch.device = "cpu", memory_format: str = "contiguous"
):
    """The method of the ``VARIANTS`` entry ``name`` set up on its own supernet (``method.ctx.model``) on ``device``,
    laid out in ``memory_format`` (``contiguous`` | ``channels_last``, as the config key)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; valid variants: {', '.join(VARIANTS)}")
    method_name, overrides = VARIANTS[name]
    cls = METHODS.get(method_name)
    device = torch.device(device)
    torch.manual_seed(0)
    space = SPACES.get(cls.space)
    model = apply_memory_format(SearchNetwork(space, channels, 10, layers).to(device), memory_format)
    method = cls(cls.config_class(**overrides))
    method.setup(
        SearchContext(
            model=model,
            space=space,
            loss=_loss,
            config=SearchConfig(),
            steps_per_epoch=1,
            op_costs=model.op_costs,
            device=device,
        )
    )
    method.start_epoch(0)
    return method


def make_step(
    name: str,
    channels: int,
    layers: int,
    batch: int,
    device: str | torch.device = "cpu",
    memory_format: str = "contiguous",
) -> Callable[[], StepStats]:
    """``method.step`` of the ``VARIANTS`` entry ``name`` on its own supernet and fixed random batches on ``device``."""
    return method_step(make_method(name, channels, layers, device, memory_format), batch, device)


def method_step(method, batch: int, device: str | torch.device = "cpu") -> Callable[[], StepStats]:
    """``method.step`` on two fixed seeded random batches (search-train, search-val) of ``batch`` images."""
    g = torch.Generator().manual_seed(0)
    train, val = (tuple(t.to(device) for t in _batch(g, batch)) for _ in range(2))  # the same data for every variant
    return functools.partial(method.step, train, val)


def time_methods(channels: int, layers: int, batch: int, rounds: int) -> dict:
    """Median seconds per ``method.step`` of every variant, interleaved, and the ratio to ``BASELINE``."""
    variants = {name: make_step(name, channels, layers, batch) for name in VARIANTS}
    return time_interleaved(variants, rounds, BASELINE, {"channels": channels, "layers": layers, "batch": batch})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    result = time_methods(args.channels, args.layers, args.batch, args.rounds)
    print_result(result, "one search step (method.step), 32x32", args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
