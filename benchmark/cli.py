"""``egsbench`` (also ``python -m benchmark``): run, list and demo.

    egsbench run CONFIG --out DIR [--set key=value ...]
    egsbench list methods|tasks|spaces|configs
    egsbench demo [--out DIR]

A user mistake (unknown name, bad config key, missing data) prints one ``error:`` line and
exits with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from tasks.spaces import UserError

__all__ = ["main"]

DEMO_CONFIGS = ("demo/egs-cifar10",)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egsbench", description="Benchmark suite for differentiable NAS.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="search -> derive -> evaluate one config")
    run.add_argument(
        "config", help="a YAML path or a bundled name such as smoke/egs-cifar10 (see: egsbench list configs)"
    )
    run.add_argument("--out", required=True, type=Path, help="run folder to write (config, genotype, curves, record)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. --set method.M=4 (repeatable)")  # fmt: skip
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")

    lst = sub.add_parser("list", help="list registered components or bundled configs")
    lst.add_argument("what", choices=["methods", "tasks", "spaces", "configs"])

    demo = sub.add_parser("demo", help="run EGS on the embedded CIFAR-10 subset and print a results table")
    demo.add_argument("--out", type=Path, default=None, help="folder for the run folders (default: a temp dir)")
    demo.add_argument("--no-progress", action="store_true")
    return parser


def results_table(records: list[dict]) -> str:
    """A fixed-width table of run records (one row each)."""
    import pandas as pd

    rows = [
        {
            "method": r["method"],
            "task": r["task"],
            "preset": r["preset"],
            "seed": r["seed"],
            "test acc (%)": r["metrics"]["test_accuracy"],
            "test err (%)": r["metrics"]["test_error"],
            "params (M)": r["metrics"]["params_m"],
            "MACs (M)": r["metrics"]["macs_m"],
            "search (s)": r["search"]["wall_time_s"],
            "eval (s)": r["evaluate"]["wall_time_s"],
        }
        for r in records
    ]
    return pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.2f}")


def _run(args) -> int:
    from .config import load_config
    from .runner import run_experiment

    cfg = load_config(args.config, args.overrides)
    result = run_experiment(cfg, args.out, progress=not args.no_progress)
    print(results_table([result.record]))
    print(f"run folder: {result.out_dir}")
    return 0


def _list(args) -> int:
    from .config import bundled_configs
    from .registry import METHODS, SPACES, TASKS

    names = {"methods": METHODS, "tasks": TASKS, "spaces": SPACES}
    print("\n".join(bundled_configs() if args.what == "configs" else names[args.what].names()))
    return 0


def _demo(args) -> int:
    from .config import load_config
    from .runner import run_experiment

    out = args.out or Path(tempfile.mkdtemp(prefix="egsbench-demo-"))
    start = time.perf_counter()
    records = []
    for name in DEMO_CONFIGS:
        cfg = load_config(name)
        folder = out / name.replace("/", "-")
        records.append(run_experiment(cfg, folder, progress=not args.no_progress).record)
    sizes = records[0]["data"]["sizes"]
    print(f"\nEGS-Bench demo: embedded real CIFAR-10 subset ({sizes['train']} train / {sizes['test']} test images), "
          "CPU-sized networks; not comparable to paper numbers.")  # fmt: skip
    print(results_table(records))
    print(f"total wall time {time.perf_counter() - start:.0f} s; run folders under {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        from .registry import load_plugins

        load_plugins()
        return {"run": _run, "list": _list, "demo": _demo}[args.command](args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
