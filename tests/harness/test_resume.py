"""Checkpoint and resume: a run killed with SIGKILL mid-search and resumed ends with the same record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from egsbench.benchmark.checkpoint import KILL_ENV, debug_kill
from egsbench.benchmark.config import load_config
from egsbench.benchmark.runner import run_experiment
from egsbench.tasks.spaces import UserError

# the killed run is a subprocess (torch's default thread count: all cores) and the others run in this process
# (conftest caps it at 2); CPU kernels' float results depend on the thread count, so all three pin it
OVERRIDES = [
    "threads=1",
    "search.epochs=4",
    "search.batch_size=16",
    "search.max_steps_per_epoch=2",
    "evaluate.epochs=2",
    "evaluate.batch_size=16",
    "evaluate.max_steps_per_epoch=2",
    "figures=false",
]
VOLATILE = {"created", "search", "evaluate", "manifest"}  # wall times, memory, machine: differ between any two runs


def comparable(record: dict) -> dict:
    out = {k: v for k, v in record.items() if k not in VOLATILE}
    out["search_steps"] = record["search"]["steps"]
    out["evaluate_steps"] = record["evaluate"]["steps"]
    return out


def curves(folder: Path, name: str) -> list[dict]:
    rows = (folder / name).read_text().splitlines()
    header = rows[0].split(",")
    keep = [i for i, h in enumerate(header) if h != "seconds"]
    return [[row.split(",")[i] for i in keep] for row in rows]


def test_checkpoints_load_with_weights_only(shipped_smoke):
    run = shipped_smoke("egs")
    for phase in ("search", "evaluate"):
        [latest] = list((run / "checkpoints" / phase).glob("epoch-*"))
        state = torch.load(latest / "state.pt", weights_only=True)
        assert "train_gen" in state
        assert (latest / "model.safetensors").is_file()
        assert json.loads((latest / "progress.json").read_text())["epoch"] == 0


def test_unfinished_folder_needs_resume_and_the_same_config(tmp_path):
    cfg = load_config("smoke/egs-cifar10")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(UserError, match="unfinished run; pass --resume"):
        run_experiment(cfg, folder, progress=False)
    with pytest.raises(UserError, match="different config"):
        run_experiment(cfg, folder, progress=False, resume=True)


@pytest.mark.slow
def test_sigkill_mid_search_then_resume_gives_the_same_record(tmp_path):
    cfg = load_config("smoke/egs-cifar10", OVERRIDES)
    reference = run_experiment(cfg, tmp_path / "uninterrupted", progress=False).record

    killed = tmp_path / "killed"
    args = [sys.executable, "-m", "egsbench", "run", "smoke/egs-cifar10", "--out", str(killed), "--no-progress"]
    for o in OVERRIDES:
        args += ["--set", o]
    # SIGKILL once the checkpoint of search epoch 1 is complete, two search epochs to go (an exact point, no timer)
    env = {**os.environ, KILL_ENV: "search:1"}
    proc = subprocess.run(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
    assert proc.returncode == -signal.SIGKILL
    assert sorted(p.name for p in (killed / "checkpoints" / "search").glob("epoch-*")) == ["epoch-0000", "epoch-0001"]
    assert not (killed / "search_result.json").exists() and not (killed / "record.json").exists()

    resumed = run_experiment(cfg, killed, progress=False, resume=True).record
    assert comparable(resumed) == comparable(reference)
    for name in ("search_curves.csv", "eval_curves.csv"):
        assert curves(killed, name) == curves(tmp_path / "uninterrupted", name)
    assert json.loads((killed / "arch_probabilities.json").read_text()) == json.loads(
        (tmp_path / "uninterrupted" / "arch_probabilities.json").read_text()
    )


def test_the_debug_kill_hook_names_its_form_and_passes_other_checkpoints(monkeypatch):
    monkeypatch.setenv(KILL_ENV, "search")
    with pytest.raises(UserError, match="must be PHASE:EPOCH, e.g. search:1"):
        debug_kill("search", 0)
    monkeypatch.setenv(KILL_ENV, "search:1")
    debug_kill("search", 0)  # another epoch, and another phase: this process lives on
    debug_kill("evaluate", 1)
