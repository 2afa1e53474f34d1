"""The run folder (issue 9, items 1 and 6; issue 17, item 7): one run per folder at a time, an unusable --out is one
line, and load_network refuses a folder whose files describe different runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from safetensors.torch import load_model

import egsbench
from egsbench.benchmark.api import RunFolderMismatchError, resolve_config
from egsbench.benchmark.config import load_config
from egsbench.benchmark.run_folder import RunLockedError, lock_holder, run_lock
from egsbench.benchmark.sweep import load_sweep, plan_runs
from egsbench.tasks import TASKS
from egsbench.tasks.spaces import Genotype, UserError
from egsbench.testing.reliability import BASE, FAST, overrides, snapshot


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
    slow = [*FAST, "search.epochs=100000"]  # never finishes on its own: still searching whatever the load
    first = subprocess.Popen(
        [sys.executable, "-m", "egsbench", "run", BASE, "--out", str(out), "--no-progress", *overrides(*slow)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300  # a hang guard, not a timing
        while not (lock_holder(out) and (out / "config.yaml").exists()) and first.poll() is None:
            assert time.monotonic() < deadline, "the first run never started"
            time.sleep(0.05)
        assert lock_holder(out) == str(first.pid), "the first run never took the lock"

        task = TASKS.get(load_config(BASE).task_name)
        with mock.patch.object(task, "prepare_data", side_effect=AssertionError("the data was read")) as read:
            result = cli("run", BASE, "--out", out, "--no-progress", *overrides(*slow, "seed=1"))
        assert not read.called  # refused by the folder check, which runs before the data is read
        assert result.code == 2
        assert result.error == (
            f"error: {out} is in use by another egsbench run (pid {first.pid}); wait for it to "
            "finish or pass a new --out"
        )
        assert first.poll() is None, "the first run ended before the check; the lock was not tested while held"
        assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == 0  # the second run wrote nothing
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert lock_holder(out) is None  # the kernel released the lock with the killed process
    assert not (out / "record.json").exists()
    result = cli("run", BASE, "--out", out, "--no-progress", *overrides(*slow))
    assert result.code == 2 and "holds an unfinished run; pass --resume" in result.error  # not "in use"


def test_the_lock_names_its_holder_and_refuses_a_second_taker(tmp_path):
    """The OS lock (filelock: flock here, msvcrt on Windows) and the holder's pid beside it, gone with the holder."""
    out = tmp_path / "run"
    assert lock_holder(out) is None and not out.exists()  # a probe creates nothing
    with run_lock(out):
        assert lock_holder(out) == str(os.getpid())
        with pytest.raises(RunLockedError) as busy, run_lock(out):
            pass
        assert str(busy.value).startswith(f"{out} is in use by another egsbench run (pid {os.getpid()})")
        assert lock_holder(out) == str(os.getpid())  # the refused taker left the holder's pid alone
    assert lock_holder(out) is None and not (out / ".lock.pid").exists()
    with run_lock(out):  # free again
        pass


def test_a_sweep_leaves_a_run_folder_another_process_holds_alone(cli, tmp_path):
    """Sweeps sharing an output folder lock per run folder: a held one is skipped, nothing is written into it."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump({"name": "t", "methods": ["gdas"], "tasks": ["cifar10"], "presets": ["smoke"], "seeds": [0]})
    )
    out = tmp_path / "out"
    [run] = plan_runs(load_sweep(sweep), out)
    with run_lock(Path(run.folder)):  # as another sweep's run would hold it
        before = snapshot(Path(run.folder))
        result = cli("sweep", sweep, "--out", out)
        assert snapshot(Path(run.folder)) == before
    assert result.code == 0, result.err  # nothing failed: the run is the other process's
    assert f"skip (running elsewhere: in use by pid {os.getpid()})" in result.out
    assert "0 ran, 1 skipped" in result.out and "0 failed" in result.out


# ---- load_network on a run folder whose files disagree (issue 17, item 7) ------------------------------------------


@pytest.fixture(scope="module")
def darts_v1_run(tmp_path_factory) -> Path:
    """A finished run of DARTS_V1 (its reduce cell has both avg_pool_3x3 and max_pool_3x3): no search, one step."""
    out = tmp_path_factory.mktemp("load") / "run"
    egsbench.run("smoke/fixed-cifar10", out, [*FAST, "method.genotype=darts_v1"])
    return out


def _copy_run(run: Path, folder: Path) -> Path:
    folder.mkdir()
    for name in ("config.yaml", "genotype.json", "model.safetensors"):
        (folder / name).write_bytes((run / name).read_bytes())
    return folder


def test_an_edited_genotype_that_still_loads_is_refused(darts_v1_run, tmp_path):
    folder = _copy_run(darts_v1_run, tmp_path / "edited")
    assert not egsbench.load_network(folder).training  # as written by the run: loads
    text = (folder / "genotype.json").read_text()
    swapped = text.replace("avg_pool_3x3", "@").replace("max_pool_3x3", "avg_pool_3x3").replace("@", "max_pool_3x3")
    (folder / "genotype.json").write_text(swapped)
    # Pools have no weights: the edited network takes every tensor of the file, so only the metadata tells
    cfg = resolve_config(yaml.safe_load((folder / "config.yaml").read_text()))
    edited = TASKS.get("cifar10")(cfg.task).build_network(Genotype.load(folder / "genotype.json"), cfg.evaluate)
    load_model(edited, str(folder / "model.safetensors"), strict=True)

    with pytest.raises(RunFolderMismatchError) as err:
        egsbench.load_network(folder)
    assert isinstance(err.value, UserError)  # one error: line on the command line
    assert str(err.value) == (
        f"{folder / 'genotype.json'} is not the genotype {folder / 'model.safetensors'} was trained with (its "
        'metadata): reduce edge 0 is [0, 2, "avg_pool_3x3"] in genotype.json, [0, 2, "max_pool_3x3"] in the weights; '
        "restore genotype.json (the record's genotype) or pass the run folder the weights came from"
    )


def test_a_config_of_another_run_beside_the_weights_is_refused(darts_v1_run, tmp_path):
    folder = _copy_run(darts_v1_run, tmp_path / "other-seed")
    config = (folder / "config.yaml").read_text()
    assert "\nseed: 0\n" in config
    (folder / "config.yaml").write_text(config.replace("\nseed: 0\n", "\nseed: 3\n"))  # builds the same network
    with pytest.raises(RunFolderMismatchError) as err:
        egsbench.load_network(folder)
    assert str(err.value) == (
        f"{folder / 'config.yaml'} describes run fixed-cifar10-smoke-seed3, but {folder / 'model.safetensors'} was "
        "trained by run fixed-cifar10-smoke-seed0 (its metadata); restore config.yaml or pass the run folder the "
        "weights came from"
    )
    assert torch.is_tensor(next(egsbench.load_network(darts_v1_run).parameters()))  # the original still loads


def test_accelerates_one_process_launch_asked_for_several_is_refused(cli, tmp_path, monkeypatch):
    """``accelerate launch --cpu --num_processes 2`` (no --multi_gpu, no mpirun) starts one process: refused."""
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")  # as accelerate's simple launcher sets them for N > 1
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    result = cli("run", BASE, "--out", tmp_path / "run", "--no-progress", *overrides(*FAST))
    assert result.code == 2
    assert result.error.startswith("error: accelerate launch started one process, not several")
    assert "accelerate launch --multi_gpu --num_processes N" in result.error
    assert not (tmp_path / "run").exists()
