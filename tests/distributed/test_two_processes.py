"""Two processes on the CPU (gloo), started by ``torchrun`` and by ``accelerate launch``, without ``device=cpu``.

- Every method through the CLI under both launchers, on the smoke data and on 64 training / 32 test
  images (uneven and empty shards): both ranks exit 0, one record with world size 2, metrics over every test sample
  once (with ``figures: false``: no PNG anywhere); each method's case under one launcher runs twice and the repeat
  gives the same genotype and metrics.
- Every method's search keeps identical alphas and derives the same genotype on both ranks.
- A rank that arrives late at its first collective (rank 1, and the main process) only makes the
  others wait; a run refused by the main process (a finished folder) stops both ranks with one line.

The launches run in the background beside the rest of the suite (``tests/distributed/launches.py``);
these tests wait for them. A two-process search is not compared bit for bit with a one-process run
of the same global batch: BatchNorm normalises with each process's own batch statistics (DDP
without SyncBatchNorm, as the originals' multi-GPU code), so the losses differ slightly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.distributed.launches import LAUNCHERS, METHODS, SIZES, cli_cases, repeated

WORKER_RUNS = [*METHODS, "random_baseline", "fixed", "gdas_uneven", "egs_uneven"]
CLI_CASES = cli_cases()


def _ok(launch):
    failure = launch.failure()
    assert failure is None, failure
    return launch


@pytest.fixture(scope="module")
def worker_results(distributed_launches):
    launch = _ok(distributed_launches.get("alphas"))
    out = launch.out
    return {name: [json.loads((out / f"{name}.rank{r}.json").read_text()) for r in (0, 1)] for name in WORKER_RUNS}


@pytest.mark.parametrize("name", WORKER_RUNS)
def test_both_ranks_hold_the_same_alphas_and_genotype(worker_results, name):
    rank0, rank1 = worker_results[name]
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["probabilities"] == rank1["probabilities"], "the architecture parameters drifted apart"
    assert rank0["genotype"] == rank1["genotype"]


@pytest.mark.parametrize("name", ["egs", "random", "gdas_uneven"])
def test_evaluation_counts_every_test_sample_exactly_once(worker_results, name):
    for rank in worker_results[name]:
        assert rank["test_count"] == rank["test_size"] == 101  # 101 = 7 x 14 + 3: uneven shards, no padding


def _record(folder: Path) -> dict:
    records = list(folder.rglob("record.json"))
    assert len(records) == 1, f"{len(records)} records under {folder}"
    return json.loads(records[0].read_text())


def _comparable(record: dict) -> dict:
    """What must not change between two runs of one config: the genotype and every metric."""
    return {"genotype": record["genotype"], "metrics": record["metrics"], "test_count": record["extras"]["test_count"]}


def test_the_cli_cases_cover_every_method_under_both_launchers_and_on_both_sizes():
    assert len(CLI_CASES) == len(set(CLI_CASES)) == 2 * len(METHODS)
    assert {(kind, method) for kind, _, method in CLI_CASES} == {(k, m) for k in LAUNCHERS for m in METHODS}
    assert {(size, method) for _, size, method in CLI_CASES} == {(s, m) for s in SIZES for m in METHODS}
    assert {(kind, size) for kind, size, _ in CLI_CASES} == {(k, s) for k in LAUNCHERS for s in SIZES}
    twice = [(kind, size, method) for kind, size, method in CLI_CASES if repeated(kind, method)]
    assert sorted(method for _, _, method in twice) == sorted(METHODS)  # every method's repeat, once
    assert {kind for kind, _, _ in twice} == set(LAUNCHERS) and {size for _, size, _ in twice} == set(SIZES)


@pytest.mark.parametrize("kind,size,method", CLI_CASES)
def test_every_method_runs_on_two_processes_through_the_cli(distributed_launches, kind, size, method):
    launch = _ok(distributed_launches.get(f"cli-{kind}"))
    codes = [json.loads((launch.out / f"codes.rank{r}.json").read_text()) for r in (0, 1)]
    records = []
    for repeat in ("r0", "r1") if repeated(kind, method) else ("r0",):
        assert codes[0][f"{method}/{repeat}"] == codes[1][f"{method}/{repeat}"] == 0, launch.done.stderr[-3000:]
        record = _record(launch.out / method / repeat)
        assert record["status"] == "ok" and record["world_size"] == 2 and record["mixed_precision"] == "no"
        assert record["manifest"]["device"].endswith("x2")  # joined the process group: gloo on the CPU
        assert record["extras"]["test_count"] == record["data"]["sizes"]["test"]  # every test sample, once
        assert (record["data"]["sizes"]["train"] == 64) == (size == "small")
        assert not list((launch.out / method / repeat).rglob("*.png"))  # figures=false, on every rank
        records.append(record)
    if repeated(kind, method):  # (each method's case under one launcher: the test above)
        assert _comparable(records[0]) == _comparable(records[1]), "the same config ran twice gave another result"


@pytest.mark.parametrize("name", ["slow-rank1-torchrun", "slow-rank0-accelerate"])
def test_a_rank_late_to_its_first_collective_only_makes_the_others_wait(distributed_launches, name):
    launch = _ok(distributed_launches.get(name))
    record = _record(launch.out)
    assert record["status"] == "ok" and record["world_size"] == 2
    assert record["extras"]["test_count"] == record["data"]["sizes"]["test"] == 32
    assert launch.done.stdout.count("run folder:") == 1  # results printed by the main process only
    assert len(list((launch.out / "run").glob("*.png"))) == 5  # the figures, drawn once (by the main process)
    assert "in use by another egsbench run" not in launch.done.stderr


def test_a_run_the_main_process_refuses_stops_every_rank_with_one_line(distributed_launches):
    launch = distributed_launches.get("refused")
    assert launch.error is None, launch.error
    assert launch.done.returncode != 0
    errors = [line for line in launch.done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, launch.done.stderr[-3000:]  # the main process's; rank 1 exits quietly
    assert "record.json already exists" in errors[0]


def test_a_language_model_runs_on_two_processes_and_counts_each_test_token_once(distributed_launches):
    if "ptb-torchrun" not in distributed_launches.launches:
        pytest.skip("the shared PTB copy (../shared/data/ptb) is not here")
    launch = _ok(distributed_launches.get("ptb-torchrun"))
    record = _record(launch.out)
    assert record["status"] == "ok" and record["world_size"] == 2
    # every rank evaluates the whole split (a plain iterable): summed once, not once per rank
    assert 0 < record["extras"]["test_count"] <= record["data"]["sizes"]["test"]


def test_a_transfer_runs_its_source_search_and_the_target_training_on_two_processes(distributed_launches):
    launch = _ok(distributed_launches.get("wt2-transfer"))
    record = _record(launch.out)
    found = json.loads((launch.out / "run" / "source" / "search_result.json").read_text())
    assert record["status"] == "ok" and record["world_size"] == 2 and record["task"] == "wt2"
    assert record["genotype"] == found["genotype"] and record["search"] == found["cost"] | {"signal": found["signal"]}
    assert record["extras"]["transfer"]["task"] == "ptb"
    assert not (launch.out / "run" / "source" / "record.json").exists()
