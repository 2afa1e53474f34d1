"""The two-process matrix of issue 17 as a Markdown table: method x launcher x data size, each run twice.

Runs the launches of ``tests/distributed`` (the same plan the tests use) one after another and prints,
per method, launcher and data size, each repeat's outcome (ok / exit status), world size, test samples
counted against the split's size, and whether the two repeats gave the same genotype and metrics;
then the slow-rank and refused-folder launches.

    python scripts/two_process_matrix.py [--keep DIR]      # about 15 minutes on two CPU cores
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.distributed.launches import LAUNCHERS, METHODS, SIZES, plan  # noqa: E402


def _record(folder: Path) -> dict | None:
    found = list(folder.rglob("record.json"))
    return json.loads(found[0].read_text()) if len(found) == 1 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="folder for the launches (default: a temp dir)")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="egsbench-matrix-"))
    launches = plan(root)
    seconds = {}
    for name, launch in launches.items():
        launch.out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        launch.run()
        seconds[name] = time.perf_counter() - start
    print("| method | launcher | data | run 1 | run 2 | world size | test samples counted / in split | repeats agree |")
    print("| --- | --- | --- | --- | --- | --: | --- | --- |")
    for method in METHODS:
        for kind in LAUNCHERS:
            for size in SIZES:
                launch = launches[f"{kind}-{size}"]
                codes = [json.loads(p.read_text()) for p in sorted(launch.out.glob("codes.rank*.json"))]
                cells, records = [], []
                for repeat in ("r0", "r1"):
                    exits = [c.get(f"{method}/{repeat}") for c in codes]
                    record = _record(launch.out / method / repeat)
                    records.append(record)
                    good = len(exits) == 2 and exits == [0, 0] and record and record["status"] == "ok"
                    cells.append("ok" if good else f"failed (exits {exits})")
                first = records[0] or {}
                split = first.get("data", {}).get("sizes", {}).get("test")
                counted = f"{first.get('extras', {}).get('test_count')} / {split}"
                same = (
                    all(records)
                    and records[0]["genotype"] == records[1]["genotype"]
                    and records[0]["metrics"] == records[1]["metrics"]
                )
                row = [method, kind, size, *cells, first.get("world_size"), counted, "yes" if same else "no"]
                print("| " + " | ".join(map(str, row)) + " |")
    print()
    for name in ("alphas", *(n for n in launches if n.startswith(("slow", "refused")))):
        launch = launches[name]
        failure = launch.failure()
        stderr = launch.done.stderr if launch.done else ""
        errors = [line for line in stderr.splitlines() if line.startswith("error:")]
        print(
            f"- {name}: exit {launch.done.returncode if launch.done else None}, {seconds[name]:.0f} s"
            + (f"; error lines: {errors}" if errors else "")
            + ("" if failure is None or errors else " (failed)")
        )
    print(f"\nlaunch wall times (s): {json.dumps({k: round(v) for k, v in seconds.items()})}; folders under {root}")


if __name__ == "__main__":
    main()
