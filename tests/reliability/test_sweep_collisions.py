"""Two sweeps into one ``--out`` (issue 17, item 3): they share the work, and no finished record is written over.

Before, sweep B started a run sweep A was finishing; that run exited 2 ("record.json already exists") and B,
taking every exit 2 for a user mistake, wrote a failed record over A's ok one. Now each run is claimed
under ``<run folder>/.claim`` for its attempts, a claimed or finished run is skipped, and the failed record
is never written where an ok one is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from egsbench.benchmark import sweep as sweep_module
from egsbench.benchmark.run_folder import CLAIM, run_lock
from egsbench.benchmark.sweep import execute_run, load_sweep, plan_runs
from egsbench.testing.reliability import FAST


def _sweep_file(tmp_path: Path, seeds: list[int]) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "shared",
                "methods": ["gdas"],
                "tasks": ["cifar10"],
                "presets": ["smoke"],
                "seeds": seeds,
                "set": FAST,
                "retries": 0,
            }
        )
    )
    return path


def test_two_sweeps_started_at_once_share_the_runs_and_both_end_ok(tmp_path):
    path, out = _sweep_file(tmp_path, [0, 1, 2]), tmp_path / "out"
    command = [sys.executable, "-m", "egsbench", "sweep", str(path), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    both = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)
    ]
    results = [(p.wait(timeout=900), *p.communicate()) for p in both]
    for code, stdout, stderr in results:
        assert code == 0, stdout + stderr
    runs = plan_runs(load_sweep(path), out)
    for run in runs:
        folder = Path(run.folder)
        assert json.loads((folder / "record.json").read_text())["status"] == "ok"
        assert [p.name for p in folder.glob("attempt*.log")] == ["attempt1.log"]  # run once, by one sweep
    ran = [int(stdout.split(" ran, ")[0].rsplit(" ", 1)[-1]) for _, stdout, _ in results]
    assert sum(ran) == len(runs)  # every run ran exactly once between them; the other sweep skipped it


def test_a_run_claimed_by_another_sweep_is_skipped_untouched(tmp_path):
    [run] = plan_runs(load_sweep(_sweep_file(tmp_path, [0])), tmp_path / "out")
    with run_lock(Path(run.folder), CLAIM):  # as the other sweep holds it around its subprocess
        result = execute_run(run)
    assert result["status"] == "busy" and "claimed by pid" in result["error"]
    assert not (Path(run.folder) / "record.json").exists()


def test_an_ok_record_is_never_written_over(tmp_path, monkeypatch):
    """The run's subprocess exits 2 because someone else finished the run meanwhile: the ok record stays."""
    [run] = plan_runs(load_sweep(_sweep_file(tmp_path, [0])), tmp_path / "out")
    folder = Path(run.folder)
    ok = {"status": "ok", "config_hash": "another sweep's"}

    def finished_elsewhere(command, **kwargs):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "record.json").write_text(json.dumps(ok))
        return subprocess.CompletedProcess(command, 2, "", f"error: {folder}/record.json already exists: ...")

    monkeypatch.setattr(sweep_module.subprocess, "run", finished_elsewhere)
    result = execute_run(run)
    assert result["status"] == "done"
    assert json.loads((folder / "record.json").read_text()) == ok
