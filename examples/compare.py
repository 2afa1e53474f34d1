"""A small head-to-head through the Python API: methods x seeds on the embedded CIFAR-10 subset, then the table
``egsbench compare`` prints (each method against a baseline: Δ with a 95 % bootstrap interval, Welch + Holm,
wins, the seeds a t-test would need) and its cost-vs-error plot.

    python examples/compare.py --out runs/compare          # egs, darts, gdas x 2 seeds, smoke size: minutes on a CPU
    python examples/compare.py --out runs/c --methods gdas random --fast   # one step per phase: seconds a run

Smoke runs cannot say which method is better (a dozen search steps, 128 test images); the table says so ("not
resolved") and how many seeds would be needed. A finished run folder is reused, so a second call only compares.
Comparisons that mean something: results/studies/ and the proxy presets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import egsbench
from egsbench.benchmark.compare import compare_runs, plot_comparison, render_comparison
from egsbench.benchmark.records import read_record
from egsbench.methods import METHODS
from egsbench.tasks.spaces import UserError

# --fast: the cheapest end-to-end run (one search and one training step, a few dozen images, no PNG figures);
# numbers mean nothing
FAST = {
    "figures": False,
    "task.train_limit": 64,
    "task.test_limit": 32,
    "search.batch_size": 16,
    "search.max_steps_per_epoch": 1,
    "search.score_batches": 1,
    "evaluate.batch_size": 16,
    "evaluate.max_steps_per_epoch": 1,
}


def run_or_reuse(config: str, folder: Path, overrides: dict) -> dict:
    """The record of ``config`` in ``folder``: the finished run there, else a fresh run."""
    if (folder / "record.json").is_file():
        return read_record(folder / "record.json")
    return egsbench.run(config, folder, overrides=overrides).model_dump(mode="json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Methods head to head on the embedded CIFAR-10 subset.")
    parser.add_argument("--out", type=Path, default=Path("runs/compare"), help="folder of run folders and the plot")
    parser.add_argument("--methods", nargs="+", default=["egs", "darts", "gdas"], help="methods (smoke configs)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="two or more for an uncertainty")
    parser.add_argument("--baseline", default=None, help="the method the others face (default: darts if it ran)")
    parser.add_argument("--fast", action="store_true", help="one step per phase on a few dozen images (tests)")
    args = parser.parse_args(argv)
    for method in args.methods:
        METHODS.get(method)  # a misspelt name fails before the first run, with the closest name

    records = []
    for method in args.methods:
        for seed in args.seeds:
            overrides = {"seed": seed, **(FAST if args.fast else {})}
            folder = args.out / f"{method}-seed{seed}"
            records.append(run_or_reuse(f"smoke/{method}-cifar10", folder, overrides))
            print(f"{method} seed {seed}: test error {records[-1]['metrics']['test_error']:.1f} % ({folder})")

    comparison = compare_runs(records, task="cifar10", baseline=args.baseline)
    print(render_comparison(comparison, "md"))
    print(f"plot: {plot_comparison(comparison, args.out / 'compare_cifar10_test_error.png')}")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except UserError as err:  # a user's mistake: one line and exit status 2, no traceback (as the egsbench command)
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
