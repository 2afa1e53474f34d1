"""One rank of a series of ``egsbench run`` command lines, started by ``torchrun`` or ``accelerate launch``.

    python cli_runs.py OUT SPEC_JSON

``SPEC_JSON`` is a list of ``{"name", "config", "set": [...], "repeats": n}``. For each run and repeat
the rank calls the CLI's ``main(["run", config, "--out", OUT/name/rK, "--no-progress", "--set", ...])``,
the same function ``egsbench run`` calls, and writes ``OUT/codes.rank<k>.json``: every call's exit
status. The runs share one launch, so process start-up and the rendezvous are paid once; each run
joins no new process group (accelerate's state is per process) but checks, locks, searches,
trains and writes its folder as a launch of its own would.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from accelerate import PartialState

from egsbench.benchmark.cli import main as egsbench


def run_all(out: Path, specs: list[dict]) -> None:
    codes = {}
    for spec in specs:
        for repeat in range(spec.get("repeats", 2)):
            folder = out / spec["name"] / f"r{repeat}"
            sets = [x for value in spec.get("set", []) for x in ("--set", value)]
            codes[f"{spec['name']}/r{repeat}"] = egsbench(
                ["run", spec["config"], "--out", str(folder), "--no-progress", *sets]
            )
    rank = PartialState().process_index
    (out / f"codes.rank{rank}.json").write_text(json.dumps(codes))


if __name__ == "__main__":
    run_all(Path(sys.argv[1]), json.loads(sys.argv[2]))
