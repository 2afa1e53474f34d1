"""Time one search step (forward + backward) of the DARTS CNN supernet under different edge weightings.

EGS codes at M = 1 and M = 7 (sparse execution: only sampled ops run) against dense
softmax weighting (DARTS: every op runs) on the same supernet, in one process, with the
variants interleaved round by round so that machine noise hits them alike. Reports the
median time per variant and its ratio to the dense step.

    python -m egsbench.benchmark.bench_search_step                # C=16, 8 cells, batch 64 (the DARTS search net)
    python -m egsbench.benchmark.bench_search_step --channels 8 --layers 5 --batch 32 --rounds 5 --json out.json

The same variants are pytest-benchmark cases in ``tests/benchmarks`` (one after another, saved as JSON
so two commits compare): ``pytest tests/benchmarks --benchmark-only --benchmark-autosave``, then
``--benchmark-compare``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..methods import SearchConfig, SearchContext
from ..methods.egs import EGS, EGSConfig
from ..tasks.spaces import SPACES, SearchNetwork
from .timing import print_result, time_interleaved

__all__ = ["BASELINE", "main", "make_variants", "time_variants"]

BASELINE = "dense_softmax"  # DARTS: every op of every edge runs


def _egs(model: SearchNetwork, M: int, lam: float) -> EGS:
    method = EGS(EGSConfig(M=M, lam=lam))
    method.setup(
        SearchContext(
            model=model, space=model.space, loss=None, config=SearchConfig(), steps_per_epoch=1, op_costs=model.op_costs
        )
    )
    return method


def make_variants(channels: int, layers: int, batch: int) -> dict[str, Callable[[], None]]:
    """One forward+backward step of a shared ``dag`` supernet per weighting (``BASELINE`` first).

    The scripts time them interleaved; ``tests/benchmarks`` times them one by one with pytest-benchmark.
    """
    torch.manual_seed(0)
    space = SPACES.get("dag")
    model = SearchNetwork(space, channels, 10, layers)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))  # (B, 3, 32, 32), (B,)
    alphas = {t: (1e-3 * torch.randn(space.num_edges, space.num_ops)).requires_grad_() for t in space.cell_types}
    methods = {"egs_m1": _egs(model, 1, 0.5), "egs_m7": _egs(model, 7, 0.5), "egs_m1_lam1": _egs(model, 1, 1.0)}

    def step(weights_fn: Callable[[], dict]) -> Callable[[], None]:
        def run() -> None:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x, weights_fn()), y).backward()

        return run

    variants = {BASELINE: step(lambda: {t: torch.softmax(a, dim=-1) for t, a in alphas.items()})}
    return variants | {name: step(m.sample) for name, m in methods.items()}


def time_variants(channels: int, layers: int, batch: int, rounds: int, threads: int | None = None) -> dict:
    """Median seconds per forward+backward step for each weighting, and the ratio to dense."""
    if threads:
        torch.set_num_threads(threads)
    return time_interleaved(
        make_variants(channels, layers, batch),
        rounds,
        BASELINE,
        label="dense",
        config={"channels": channels, "layers": layers, "batch": batch},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=str, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    result = time_variants(args.channels, args.layers, args.batch, args.rounds, args.threads)
    print_result(result, "search step (forward + backward)", args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
