"""Write a committed study's outputs from a folder of runs: its records, comparison tables, plot and wall times.

    python scripts/write_study.py runs/studies/cifar10-proxy results/studies/cifar10-proxy --baseline random

Writes into the study folder: ``records/<method>-seed<N>.json`` (each run's ``record.json``, so the tables can be
re-made from the repository with ``egsbench compare --runs <study>/records``), ``comparison.md``,
``comparison.csv`` and ``comparison.tex`` (the comparison, search-signal and genotype-agreement tables),
``compare.png`` (the metric against search cost, the Pareto front marked) and ``wall_times.md`` (per run: search,
derivation and final-training wall time; the sum). The README beside them is written by hand.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd

from egsbench.benchmark.compare import compare_runs, plot_comparison, render_comparison
from egsbench.benchmark.records import atomic_write_text, load_records, record_paths
from egsbench.benchmark.tables import render


def _name(record: dict) -> str:
    method = (record.get("config") or {}).get("method") or {}
    tag = "".join(f"-{k}{v}" for k, v in sorted(method.items()) if k in ("order", "M"))
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", f"{record['method']}{tag}-{record['task']}-seed{record['seed']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--baseline", default=None)
    args = parser.parse_args(argv)
    records = load_records(args.runs)
    (args.out / "records").mkdir(parents=True, exist_ok=True)
    for path in record_paths(args.runs):
        record = json.loads(path.read_text())
        atomic_write_text(args.out / "records" / f"{_name(record)}.json", path.read_text())
    comparison = compare_runs(records, baseline=args.baseline)
    for fmt, suffix in (("md", "md"), ("csv", "csv"), ("latex", "tex")):
        atomic_write_text(args.out / f"comparison.{suffix}", render_comparison(comparison, fmt))
    plot_comparison(comparison, args.out / "compare.png")
    ok = [r for r in records if r.get("status") == "ok"]
    rows = [
        {
            "run": _name(r),
            "search (s)": r["search"]["wall_time_s"],
            "derive (s)": r["search"]["derive_wall_time_s"],
            "final training (s)": r["evaluate"]["wall_time_s"],
        }
        for r in ok
    ]
    frame = pd.DataFrame(rows).sort_values("run")
    total = frame[["search (s)", "derive (s)", "final training (s)"]].sum()
    frame = pd.concat([frame, pd.DataFrame([{"run": "sum", **total}])], ignore_index=True)
    atomic_write_text(args.out / "wall_times.md", render(frame, "md"))
    print(render_comparison(comparison, "md"))
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
