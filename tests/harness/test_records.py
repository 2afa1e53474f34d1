"""The record.json schema (validation, version 1 upgrade, round trips) and the concurrent-safe RecordStore."""

from __future__ import annotations

import json
import multiprocessing
import re

import pytest
import torch

from egsbench.benchmark.config import load_config
from egsbench.benchmark.records import (
    SCHEMA_VERSION,
    RecordError,
    read_record,
    upgrade_record,
    validate_record,
    write_json,
    write_record,
)
from egsbench.benchmark.runner import run_experiment
from egsbench.benchmark.store import RecordStore
from egsbench.tasks.spaces import UserError


def make_record(**changes) -> dict:
    """A small valid schema-2 record, as the runner writes it."""
    record = {
        "schema_version": SCHEMA_VERSION,
        "status": "ok",
        "error": None,
        "method": "egs",
        "task": "cifar10",
        "space": "dag",
        "preset": "smoke",
        "seed": 0,
        "config_hash": "df4d9e8b9aea7baf",
        "config": {"preset": "smoke", "seed": 0, "method": {"name": "egs", "M": 7}},
        "metrics": {
            "test_accuracy": 10.9,
            "test_error": 89.1,
            "test_loss": 18.5,
            "params_m": 0.04,
            "macs_m": 10.3,
            "search_val_score": None,
        },
        "genotype": {"normal": [[0, 2, "skip_connect"]], "normal_concat": [2]},
        "search": {
            "wall_time_s": 33.2,
            "derive_wall_time_s": 21.6,
            "steps": 3,
            "steps_per_s": 0.09,
            "device_hours": 0.009,
            "peak_memory_mb": 1030.0,
        },
        "evaluate": {
            "wall_time_s": 34.8,
            "steps": 3,
            "steps_per_s": 0.086,
            "device_hours": 0.0097,
            "peak_memory_mb": 1055.3,
        },
        "data": {"source": "embedded:cifar10_demo.npz", "sha256": "f" * 64, "sizes": {"train": 256, "test": 128}},
        "manifest": {
            "git_sha": None,
            "python": "3.11.7",
            "packages": {"torch": "2.4.0", "egs-bench": None},
            "platform": "Linux",
            "device": "cpu (2 threads) x1",
            "determinism": {
                "torch_deterministic_algorithms": False,
                "cudnn_deterministic": False,
                "cudnn_benchmark": False,
                "seed": 0,
            },
        },
        "created": "2026-11-27T17:56:27+00:00",
    }
    return record | changes


def changed(path: str, value=None, delete: bool = False) -> dict:
    """``make_record()`` with the dotted field ``path`` set to ``value`` (or deleted)."""
    record = make_record()
    *parents, last = path.split(".")
    node = record
    for key in parents:
        node = node[key]
    if delete:
        del node[last]
    else:
        node[last] = value
    return record


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    fast = ["search.max_steps_per_epoch=1", "evaluate.max_steps_per_epoch=1", "method.derive_candidates=1"]
    cfg = load_config("smoke/egs-cifar10", fast)
    out = tmp_path_factory.mktemp("smoke") / "run"
    return cfg, run_experiment(cfg, out, progress=False)


def test_a_real_smoke_record_validates_and_reads_back(smoke_run):
    cfg, result = smoke_run
    record = read_record(result.out_dir / "record.json")
    assert record == result.record == validate_record(result.record)
    assert record["schema_version"] == SCHEMA_VERSION and record["status"] == "ok" and record["error"] is None
    assert record["config"] == cfg.to_dict()
    assert record["evaluate"]["steps_per_s"] > 0
    assert record["manifest"]["determinism"] == {
        "torch_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "seed": cfg.seed,
    }


def test_valid_records_pass_including_failed_runs_and_extras():
    assert validate_record(make_record()) == make_record()
    nothing = {"metrics": None, "genotype": None, "search": None, "evaluate": None, "data": None}
    failed = make_record(status="failed", error="CUDA out of memory", **nothing)
    validate_record(failed)
    validate_record(make_record(extras={"anything": [1, {"goes": None}]}))


BAD = [  # (record, the message it must raise)
    (changed("manifest.git_sha", delete=True), "missing field manifest.git_sha"),
    (changed("status", delete=True), "missing field status"),
    (changed("metrics.test_error", "abc"), "field metrics.test_error must be a number or null, got 'abc'"),
    (changed("seed", True), "field seed must be an integer, got True"),
    (changed("seed", 1.5), "field seed must be an integer, got 1.5"),
    (changed("method", None), "field method must be a string, got None"),
    (changed("search", []), "field search must be an object or null, got []"),
    (changed("data.sizes.train", -1), "field data.sizes.train must be >= 0, got -1"),
    (changed("metrics.test_accuracy", 140.0), "field metrics.test_accuracy must be <= 100, got 140.0"),
    (changed("status", "done"), "field status must be one of 'ok', 'failed', got 'done'"),
    (
        changed("manifest.determinism.cudnn_benchmark", "no"),
        "field manifest.determinism.cudnn_benchmark must be true or false, got 'no'",
    ),
    (changed("manifest.packages.torch", 2), "field manifest.packages.torch must be a string or null, got 2"),
    (changed("created", "yesterday"), "field created must be an ISO 8601 date-time, got 'yesterday'"),
    (changed("notes", "hi"), "unknown field notes (extra fields belong under extras)"),
    (changed("metrics.perplexity", 3.0), "unknown field metrics.perplexity"),
    (changed("metrics", None), "field metrics must not be null when status is 'ok'"),
    (changed("error", "boom"), "field error must be null when status is 'ok', got 'boom'"),
    (changed("status", "failed"), "field error must say what went wrong when status is 'failed'"),
    (changed("schema_version", 3), "field schema_version is 3, newer than this egs-bench reads (2); upgrade"),
    (changed("schema_version", "2"), "field schema_version must be 2, got '2'"),
    (changed("schema_version", 1), "field schema_version is 1, an older record: read it with read_record"),
    (changed("schema_version", delete=True), "missing field schema_version"),
    ([1, 2], "must be a JSON object, got [1, 2]"),
]


@pytest.mark.parametrize(("record", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_bad_records_raise_naming_the_field_path(record, message):
    where = "record /runs/x/record.json"
    with pytest.raises(RecordError, match=re.escape(message)) as err:
        validate_record(record, where=where)
    assert str(err.value).startswith(f"{where}: ")
    assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)


def test_every_problem_is_reported_at_once():
    record = changed("metrics.test_error", "abc")
    del record["manifest"]["git_sha"]
    with pytest.raises(RecordError, match="2 problems") as err:
        validate_record(record)
    assert err.value.problems == [
        "field metrics.test_error must be a number or null, got 'abc'",
        "missing field manifest.git_sha",
    ]


def test_write_read_round_trip_and_bad_records_write_nothing(tmp_path):
    path = tmp_path / "run" / "record.json"
    write_record(path, make_record())
    assert read_record(path) == make_record()
    with pytest.raises(RecordError, match=f"record {re.escape(str(tmp_path))}.*metrics.test_error"):
        write_record(tmp_path / "bad.json", changed("metrics.test_error", "abc"))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["record.json", "run"]


def test_read_record_names_the_file_when_it_is_torn_or_missing(tmp_path):
    (tmp_path / "record.json").write_text('{"schema_version": 2, "meth')
    with pytest.raises(RecordError, match=f"record {re.escape(str(tmp_path))}/record.json: not valid JSON"):
        read_record(tmp_path / "record.json")
    with pytest.raises(RecordError, match="cannot read it"):
        read_record(tmp_path / "none.json")


def test_version_1_records_are_upgraded_in_memory(tmp_path):
    v1 = make_record(schema_version=1)
    for key in ("status", "error", "config"):
        del v1[key]
    del v1["evaluate"]["steps_per_s"], v1["manifest"]["determinism"]
    folder = tmp_path / "run"
    write_json(folder / "record.json", v1)
    (folder / "config.yaml").write_text("preset: smoke\nseed: 0\n")

    record = read_record(folder / "record.json")
    assert record["schema_version"] == SCHEMA_VERSION and record["status"] == "ok" and record["error"] is None
    assert record["config"] == {"preset": "smoke", "seed": 0}
    assert record["evaluate"]["steps_per_s"] == pytest.approx(3 / 34.8)
    assert record["manifest"]["determinism"] is None and record["extras"] == {"upgraded_from": 1}
    assert json.loads((folder / "record.json").read_text()) == v1  # never rewritten on disk
    assert upgrade_record(make_record()) == make_record()  # current records pass through
    (folder / "config.yaml").unlink()
    assert read_record(folder / "record.json")["config"] is None
    write_json(tmp_path / "old.json", v1)  # a store's flat file: a config.yaml beside it is not its own
    (tmp_path / "config.yaml").write_text("seed: 9\n")
    assert read_record(tmp_path / "old.json")["config"] is None


def test_store_adds_finds_and_frames_records(tmp_path):
    store = RecordStore(tmp_path / "store")
    assert store.records() == [] and len(store.frame()) == 0
    a = store.add(make_record())
    b = store.add(make_record())  # same experiment again: a new file, not a replacement
    c = store.add(make_record(seed=1, status="failed", error="diverged", metrics=None, genotype=None))
    assert a.name == "egs_cifar10_smoke_seed0_df4d9e8b9aea7baf.json"
    assert len({a, b, c}) == 3 and b.name.startswith(a.stem + ".")
    assert len(store.records()) == 3 and len(store.find(seed=0)) == 2
    assert store.find(method="egs", seed=1)[0]["error"] == "diverged"
    assert store.records(status="ok", method="darts") == []
    frame = store.frame()
    assert len(frame) == 3 and frame["metrics.test_error"].isna().sum() == 1
    assert {"search.wall_time_s", "evaluate.steps_per_s", "metrics.params_m", "path"} <= set(frame.columns)
    assert frame["search.steps"].tolist() == [3, 3, 3] and frame["manifest.device"].nunique() == 1
    assert store.frame(status="failed")["path"].tolist() == [str(c)]
    with pytest.raises(RecordError, match="cannot filter records on colour"):
        store.records(colour="red")
    with pytest.raises(RecordError, match="missing field status"):
        store.add(changed("status", delete=True))
    assert len(list((tmp_path / "store").iterdir())) == 3


def _add_many(root: str, writer: int, count: int, barrier) -> None:
    store = RecordStore(root)
    barrier.wait()  # all writers start together
    for i in range(count):  # seeds 0..4 only: the writers keep racing for the same file names
        store.add(make_record(seed=i % 5, extras={"writer": writer, "index": i}))


def test_concurrent_appends_lose_nothing_and_leave_no_temporary_files(tmp_path):
    ctx = multiprocessing.get_context("fork")
    writers, count = 4, 25
    barrier = ctx.Barrier(writers)
    procs = [ctx.Process(target=_add_many, args=(str(tmp_path), w, count, barrier)) for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * writers
    records = RecordStore(tmp_path).records()  # strict: every file parses and validates
    written = sorted((r["extras"]["writer"], r["extras"]["index"]) for r in records)
    assert written == [(w, i) for w in range(writers) for i in range(count)]
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == writers * count and not [n for n in names if n.startswith(".") or n.endswith(".tmp")]


def test_bad_files_in_a_store_are_reported_with_their_path(tmp_path):
    store = RecordStore(tmp_path)
    good = store.add(make_record())
    (tmp_path / "torn.json").write_text('{"schema_version": 2, "method": "eg')
    write_json(tmp_path / "wrong.json", changed("seed", "zero"))
    with pytest.raises(RecordError, match="2 bad record file") as err:
        store.records()
    assert str(tmp_path / "torn.json") in str(err.value) and "not valid JSON" in str(err.value)
    assert f"record {tmp_path / 'wrong.json'}: field seed must be an integer" in str(err.value)

    lenient = RecordStore(tmp_path, strict=False)
    assert lenient.records() == [read_record(good)]
    assert [str(e).split(":")[0] for e in lenient.errors] == [
        f"record {tmp_path / n}" for n in ("torn.json", "wrong.json")
    ]


def test_scan_gathers_run_folders_recursively(tmp_path):
    for i, folder in enumerate(["sweep/egs-0", "sweep/egs-1", "sweep/nested/darts-0"]):
        write_record(tmp_path / folder / "record.json", make_record(seed=i))
        write_json(tmp_path / folder / "genotype.json", {"normal": []})  # other run files are not records
    store = RecordStore.scan(tmp_path / "sweep")
    assert sorted(r["seed"] for r in store.records()) == [0, 1, 2]
    assert store.frame()["path"].str.endswith("record.json").all()
    with pytest.raises(RecordError, match="read-only"):
        store.add(make_record())
    with pytest.raises(RecordError, match="no folder"):
        RecordStore.scan(tmp_path / "absent")
