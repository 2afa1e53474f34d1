"""The run folder (issue 9, items 1 and 6): one run per folder at a time, and an unusable --out is one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from egsbench.benchmark.runner import lock_holder, run_lock
from egsbench.benchmark.sweep import load_sweep, plan_runs

from .conftest import BASE, FAST, overrides, snapshot


def test_out_that_is_a_file(cli, tmp_path):
    out = tmp_path / "notes.txt"
    out.write_text("not a folder\n")
    result = cli("run", BASE, "--out", out, "--no-progress", *overrides(*FAST))
    assert result.code == 2
    assert result.error == f"error: --out {out} is a file, not a folder; pass --out to a new or existing folder"
    assert out.read_text() == "not a folder\n"


def _read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: a 0555 folder, or /sys (read-only even for root)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if not os.access(folder, os.W_OK):
        return folder
    if _refuses_mkdir(Path("/sys")):  # root writes to a 0555 folder; sysfs takes no new folders from anyone
        return Path("/sys")
    pytest.skip("no read-only folder available to this user")


def _refuses_mkdir(parent: Path) -> bool:
    probe = parent / "egsbench-probe"
    try:
        probe.mkdir()
    except OSError:
        return True
    probe.rmdir()
    return False


def test_out_in_a_read_only_folder(cli, tmp_path):
    parent = _read_only_folder(tmp_path)
    before = snapshot(parent) if parent != Path("/sys") else None
    out = parent / "run"
    result = cli("run", BASE, "--out", out, "--no-progress", *overrides(*FAST))
    assert result.code == 2
    assert result.error.startswith(f"error: cannot use {out} as the run folder (")
    assert result.error.endswith("); pass --out to a writable folder")
    assert not out.exists()
    if before is not None:
        assert snapshot(parent) == before


def test_a_second_run_into_a_busy_folder_fails_at_once_and_a_crash_frees_it(cli, tmp_path):
    """Two runs into one --out used to load each other's checkpoints and mix their files."""
    out = tmp_path / "run"
    slow = [*FAST, "search.epochs=50"]  # long enough to be still searching when the second run starts
    first = subprocess.Popen([sys.executable, "-m", "egsbench", "run", BASE, "--out", str(out), "--no-progress",
                              *overrides(*slow)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 120
        while not (lock_holder(out) and (out / "config.yaml").exists()) and first.poll() is None:
            assert time.time() < deadline, "the first run never started"
            time.sleep(0.05)
        assert lock_holder(out) == str(first.pid), "the first run never took the lock"

        start = time.perf_counter()
        result = cli("run", BASE, "--out", out, "--no-progress", *overrides(*slow, "seed=1"))
        assert time.perf_counter() - start < 10  # at once, not after loading data or waiting for the lock
        assert result.code == 2
        assert result.error == (f"error: {out} is in use by another egsbench run (pid {first.pid}); wait for it to "
                                "finish or pass a new --out")  # fmt: skip
        assert first.poll() is None, "the first run ended before the check; the lock was not tested while held"
        assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 0  # the second run wrote nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert lock_holder(out) is None  # the kernel released the lock with the killed process
    assert not (out / "record.json").exists()
    result = cli("run", BASE, "--out", out, "--no-progress", *overrides(*slow))
    assert result.code == 2 and "holds an unfinished run; pass --resume" in result.error  # not "in use"


def test_a_sweep_leaves_a_run_folder_another_process_holds_alone(cli, tmp_path):
    """Sweeps sharing an output folder lock per run folder: a held one is skipped, nothing is written into it."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "t", "methods": ["gdas"], "tasks": ["cifar10"], "presets": ["smoke"],
                                     "seeds": [0]}))  # fmt: skip
    out = tmp_path / "out"
    [run] = plan_runs(load_sweep(sweep), out)
    with run_lock(Path(run.folder)):  # as another sweep's run would hold it
        before = snapshot(Path(run.folder))
        result = cli("sweep", sweep, "--out", out)
        assert snapshot(Path(run.folder)) == before
    assert result.code == 0, result.err  # nothing failed: the run is the other process's
    assert f"skip (running elsewhere: in use by pid {os.getpid()})" in result.out
    assert "0 ran, 1 skipped" in result.out and "0 failed" in result.out
