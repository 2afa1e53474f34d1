"""Sweeps: one subprocess per run, retries that resume, config-hash folders, safe names, and the three backends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from egsbench.benchmark.checkpoint import KILL_ENV
from egsbench.benchmark.cli import main
from egsbench.benchmark.config import load_config
from egsbench.benchmark.sweep import SWEEP_DIR, SweepSpec, bundled_sweeps, load_sweep, plan_runs, run_sweep
from egsbench.testing.reliability import FAST

# the cheapest run (GDAS, one step per phase): these tests are about the sweep, not the run


def _spec(tmp_path: Path, **extra) -> SweepSpec:
    data = {
        "name": "t",
        "methods": ["gdas"],
        "tasks": ["cifar10"],
        "presets": ["smoke"],
        "seeds": [0, 1],
        "set": FAST,
        **extra,
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_sweep(path)


def _statuses(out: Path) -> list[str]:
    return sorted(json.loads(p.read_text())["status"] for p in out.rglob("record.json"))


def test_local_backend_runs_side_by_side_with_a_thread_budget(tmp_path):
    spec = _spec(tmp_path, jobs=2)
    summary = run_sweep(spec, tmp_path / "out")
    assert summary["ran"] == 2 and summary["failed"] == 0 and summary["threads_per_run"] == max(1, os.cpu_count() // 2)
    records = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("record.json")]
    assert {r["config"]["threads"] for r in records} == {summary["threads_per_run"]}
    assert all(f"({summary['threads_per_run']} threads)" in r["manifest"]["device"] for r in records)
    again = run_sweep(spec, tmp_path / "out")
    assert again["skipped"] == 2 and again["ran"] == 0


def test_a_changed_config_reruns_in_its_own_folder(tmp_path):
    out = tmp_path / "out"
    run_sweep(_spec(tmp_path, seeds=[0]), out)
    changed = run_sweep(_spec(tmp_path, seeds=[0], set=[*FAST, "evaluate.lr=0.05"]), out)
    assert changed["ran"] == 1 and changed["skipped"] == 0
    folders = sorted(p.parent.name for p in out.rglob("record.json"))
    assert len(folders) == 2 and folders[0] != folders[1] and all(f.startswith("seed0-") for f in folders)


def test_grid_values_cannot_name_a_folder_outside_out(tmp_path):
    spec = _spec(tmp_path, grid={"task.data_dir": ["../../../../etc", "a/b"]})
    out = (tmp_path / "out").resolve()
    for run in plan_runs(spec, out):
        assert out in Path(run.folder).parents
        assert "/" not in Path(run.folder).relative_to(out).parts[1]  # the grid tag is one path component


def test_a_killed_run_is_retried_and_resumes_from_its_checkpoint(tmp_path):
    # killed (SIGKILL, at an exact point: once the first search checkpoint is complete) with two search epochs to go
    spec = _spec(tmp_path, methods=["random"], seeds=[0], set=[*FAST, "search.epochs=3"])
    out = tmp_path / "out"
    (run,) = plan_runs(spec, out, threads=1)
    env = {**os.environ, KILL_ENV: "search:0"}
    proc = subprocess.run(run.command(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    assert proc.returncode == -signal.SIGKILL
    search_ckpt = Path(run.folder) / "checkpoints" / "search"
    assert [p.name for p in search_ckpt.glob("epoch-*")] == ["epoch-0000"]
    assert not (Path(run.folder) / "record.json").exists()
    summary = run_sweep(spec, out)
    assert summary["ran"] == 1, summary["failures"]
    log = (Path(run.folder) / "attempt1.log").read_text()
    assert "resumed the search after epoch" in log
    assert _statuses(out) == ["ok"]


def test_a_user_mistake_fails_once_without_retries_and_the_sweep_goes_on(tmp_path, capsys):
    spec = _spec(tmp_path, grid={"task.data_dir": ["embedded", "/nonexistent/cifar"]}, seeds=[0], retries=2)
    out = tmp_path / "out"
    out.mkdir()
    summary = run_sweep(spec, out)
    assert summary["ran"] == 1 and summary["failed"] == 1
    failed = next(p.parent for p in out.rglob("record.json") if json.loads(p.read_text())["status"] == "failed")
    assert sorted(p.name for p in failed.glob("attempt*.log")) == ["attempt1.log"]
    assert "CIFAR-10 not found at /nonexistent/cifar" in json.loads((failed / "record.json").read_text())["error"]


def test_cli_sweep_flags_override_the_file(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(
        yaml.safe_dump(
            {"name": "t", "methods": ["gdas"], "tasks": ["cifar10"], "presets": ["smoke"], "seeds": [0], "set": FAST}
        )
    )
    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--threads", "1", "--jobs", "1"]) == 0
    assert "1 threads per run" in capsys.readouterr().out
    assert main(["sweep", str(path), "--out", str(tmp_path / "o"), "--jobs", "0"]) == 2


@pytest.mark.slow
def test_submitit_local_executor_sweep(tmp_path):
    pytest.importorskip("submitit")
    out = tmp_path / "out"
    summary = run_sweep(_spec(tmp_path, threads=1), out, backend="slurm", cluster="local")
    assert summary["ran"] == 2 and summary["failed"] == 0
    assert _statuses(out) == ["ok", "ok"]
    assert any((out / "_submitit").rglob("*_submitted.pkl"))  # went through submitit


@pytest.mark.slow
def test_ray_local_sweep(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "out"
    summary = run_sweep(_spec(tmp_path, threads=1), out, backend="ray")
    assert summary["ran"] == 2 and summary["failed"] == 0
    assert _statuses(out) == ["ok", "ok"]


def test_unknown_backend_is_a_config_error(tmp_path):
    from egsbench.tasks.spaces import ConfigError

    with pytest.raises(ConfigError, match="valid backends: local, slurm, ray"):
        run_sweep(_spec(tmp_path), tmp_path / "out", backend="kubernetes")


def test_sweep_command_uses_accelerate_launch_for_several_gpus(tmp_path):
    (run,) = plan_runs(_spec(tmp_path, seeds=[0], gpus_per_run=4), tmp_path / "out")
    command = run.command()
    assert command[1:5] == ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes"] and command[5] == "4"
    assert sys.executable == command[0] and "--resume" in command


# ---- bundled sweeps by name ----------------------------------------------------------------------------------------


def test_a_bundled_sweep_loads_by_name_and_a_path_still_works(tmp_path):
    assert "smoke/five-methods" in bundled_sweeps() and "smoke-calibration" in bundled_sweeps()
    spec = load_sweep("smoke/five-methods")
    assert spec.methods == ["egs", "darts", "snas", "gdas", "random"] and spec.seeds == [0, 1]
    assert load_sweep("smoke/five-methods.yaml") == spec
    assert load_sweep(SWEEP_DIR / "smoke" / "five-methods.yaml") == spec  # the path of the same file
    assert load_sweep(str(_spec(tmp_path) and tmp_path / "sweep.yaml")).methods == ["gdas"]  # a path, as a string


def test_the_five_method_sweep_runs_on_a_fresh_clone(tmp_path):
    runs = plan_runs(load_sweep("smoke/five-methods"), tmp_path / "out")  # every config resolved and validated
    assert len(runs) == 10 and len({run.folder for run in runs}) == 10
    configs = [load_config(run.config, run.overrides) for run in runs]
    assert {cfg.task.data_dir for cfg in configs} == {"embedded"}  # the shipped subset: no ../shared, no download
    assert {cfg.method_name for cfg in configs} == {"egs", "darts", "snas", "gdas", "random"}


@pytest.mark.parametrize(
    ("name", "hint"),
    [("smoke/five-method", "did you mean 'smoke/five-methods'?"), ("../sweeps/smoke/five-methods", "Valid sweeps:")],
)
def test_an_unknown_sweep_name_is_one_line_with_the_closest(tmp_path, capsys, name, hint):
    assert main(["sweep", name, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: unknown sweep {name!r}") and hint in err and "(or pass the path" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_list_sweeps_names_each_with_its_runs_and_comment(capsys):
    assert main(["list", "sweeps"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == bundled_sweeps()
    five = next(line for line in lines if line.startswith("smoke/five-methods "))
    assert " 10 runs  EGS, DARTS, SNAS, GDAS and random search at the smoke preset" in five
    assert any(line.startswith("table5-paper ") and "  9 runs  " in line for line in lines)  # a grid counts


def test_cli_set_changes_every_run_after_the_files_set(tmp_path, monkeypatch):
    import egsbench.benchmark.sweep as sweep

    specs = []

    def run_sweep(spec, out, **kwargs):  # what the CLI hands the sweep, without running it
        specs.append(spec)
        return {"ran": 0, "skipped": 0, "failed": 0, "total": 0, "failures": [], "seconds": 0, "threads_per_run": 1}

    monkeypatch.setattr(sweep, "run_sweep", run_sweep)
    _spec(tmp_path)  # writes sweep.yaml, whose set: is FAST
    assert main(["sweep", str(tmp_path / "sweep.yaml"), "--out", str(tmp_path / "o"), "--set", "evaluate.lr=0.05"]) == 0
    assert main(["sweep", "smoke/five-methods", "--out", str(tmp_path / "o"), "--set", "a.b=1", "--set", "c=2"]) == 0
    assert [spec.set for spec in specs] == [[*FAST, "evaluate.lr=0.05"], ["a.b=1", "c=2"]]
    runs = plan_runs(replace(specs[0], seeds=[0]), tmp_path / "o")
    assert load_config(runs[0].config, runs[0].overrides).evaluate.lr == 0.05  # the later value of a key wins
