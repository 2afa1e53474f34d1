"""Two processes on the CPU (gloo, torchrun): every method keeps identical alphas and derives the same
genotype on both ranks, evaluation counts each test sample once, and a full run writes one record.

A two-process search is not compared bit for bit with a one-process run of the same global batch:
BatchNorm normalises with each process's own batch statistics (DDP without SyncBatchNorm, as the
originals' multi-GPU code), so the losses differ slightly from one batch of twice the size.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("worker.py")
RUNS = {
    "egs": "smoke/egs-cifar10",
    "darts1": "smoke/darts-cifar10,method.order=1",
    "darts2": "smoke/darts-cifar10,method.order=2",
    "snas": "smoke/snas-cifar10",
    "gdas": "smoke/gdas-cifar10",
    "random_ws": "smoke/random-cifar10",
    "random_baseline": "smoke/random-baseline-cifar10",
    "fixed": "smoke/fixed-cifar10",
}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}  # 2 ranks on 2 cores
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_port()),
               *args]  # fmt: skip
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    done = _torchrun(str(WORKER), str(out), *(f"{name},{spec}" for name, spec in RUNS.items()))
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: [json.loads((out / f"{name}.rank{r}.json").read_text()) for r in (0, 1)] for name in RUNS}


@pytest.mark.parametrize("name", list(RUNS))
def test_both_ranks_hold_the_same_alphas_and_genotype(two_rank_results, name):
    rank0, rank1 = two_rank_results[name]
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["probabilities"] == rank1["probabilities"], "the architecture parameters drifted apart"
    assert rank0["genotype"] == rank1["genotype"]


@pytest.mark.parametrize("name", ["egs", "random_ws"])
def test_evaluation_counts_every_test_sample_exactly_once(two_rank_results, name):
    for rank in two_rank_results[name]:
        assert rank["test_count"] == rank["test_size"] == 101  # 101 = 7 x 14 + 3: uneven shards, no padding


def test_a_two_process_run_writes_one_record_with_its_world_size(tmp_path):
    done = _torchrun("-m", "egsbench", "run", "smoke/random-cifar10", "--out", str(tmp_path / "r"), "--no-progress",
                     "--set", "device=cpu", "--set", "evaluate.epochs=1", "--set", "task.test_limit=101")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    records = list(tmp_path.rglob("record.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["world_size"] == 2 and record["status"] == "ok" and record["mixed_precision"] == "no"
    assert done.stdout.count("run folder:") == 1  # results printed by the main process only
