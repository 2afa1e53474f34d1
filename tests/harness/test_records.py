"""The record.json schema (the pydantic ``Record``, its checked-in JSON Schema, upgrades of versions 1 and 2, strict
writes, round trips) and gathering the records of a folder."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from egsbench.benchmark.config import load_config
from egsbench.benchmark.records import (
    SCHEMA_FILE,
    SCHEMA_VERSION,
    Record,
    RecordError,
    load_records,
    read_record,
    upgrade_record,
    validate_record,
    write_json,
    write_record,
)
from egsbench.benchmark.regress import GOLDEN_DIR
from egsbench.benchmark.runner import run_experiment
from egsbench.tasks.spaces import UserError


def make_record(**changes) -> dict:
    """A small valid record of the current schema, as the runner writes it."""
    record = {
        "schema_version": SCHEMA_VERSION,
        "status": "ok",
        "error": None,
        "method": "egs",
        "task": "cifar10",
        "space": "dag",
        "preset": "smoke",
        "seed": 0,
        "world_size": 1,
        "mixed_precision": "no",
        "deterministic": False,
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


def as_version_2(record: dict) -> dict:
    """``record`` as schema 2 wrote it: no world_size, mixed_precision or deterministic."""
    old = {k: v for k, v in record.items() if k not in ("world_size", "mixed_precision", "deterministic")}
    return old | {"schema_version": 2}


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
    fast = [
        "search.max_steps_per_epoch=1",
        "evaluate.max_steps_per_epoch=1",
        "method.derive_candidates=1",
        "figures=false",
    ]
    cfg = load_config("smoke/egs-cifar10", fast)
    out = tmp_path_factory.mktemp("smoke") / "run"
    return cfg, run_experiment(cfg, out, progress=False)


def test_a_real_smoke_record_validates_and_reads_back(smoke_run):
    cfg, result = smoke_run
    record = read_record(result.out_dir / "record.json")
    assert record == result.record == validate_record(result.record)
    assert record["schema_version"] == SCHEMA_VERSION and record["status"] == "ok" and record["error"] is None
    assert (record["world_size"], record["mixed_precision"], record["deterministic"]) == (1, "no", False)
    assert record["config"] == cfg.to_dict()
    assert record["evaluate"]["steps_per_s"] > 0
    assert record["manifest"]["determinism"] == {
        "torch_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "seed": cfg.seed,
    }


def test_valid_records_pass_including_failed_runs_and_extras():
    assert validate_record(make_record()) == make_record()
    nothing = {"metrics": None, "genotype": None, "search": None, "evaluate": None, "data": None}
    failed = make_record(status="failed", error="CUDA out of memory", **nothing)
    validate_record(failed)
    validate_record(make_record(extras={"anything": [1, {"goes": None}]}))


BAD = [  # (record, the message it must raise): each names the field by its dotted path
    (changed("manifest.git_sha", delete=True), "missing field manifest.git_sha"),
    (changed("status", delete=True), "missing field status"),
    (changed("metrics.test_error", "abc"), "field metrics.test_error: input should be a valid number, got 'abc'"),
    (changed("metrics.params_m", "3"), "field metrics.params_m: input should be a valid number, got '3'"),
    (changed("seed", True), "field seed: input should be a valid integer, got True"),
    (changed("seed", 1.5), "field seed: input should be a valid integer, got 1.5"),
    (changed("method", None), "field method: input should be a valid string, got None"),
    (changed("search", []), "field search: input should be a valid dictionary or instance of SearchCost, got []"),
    (changed("data.sizes.train", -1), "field data.sizes.train: input should be greater than or equal to 0, got -1"),
    (changed("world_size", 0), "field world_size: input should be greater than or equal to 1, got 0"),
    (changed("world_size", delete=True), "missing field world_size"),
    (changed("mixed_precision", "fp32"), "field mixed_precision: input should be 'no', 'fp16', 'bf16' or 'fp8'"),
    (changed("deterministic", 1), "field deterministic: input should be a valid boolean, got 1"),
    (changed("status", "done"), "field status: input should be 'ok' or 'failed', got 'done'"),
    (
        changed("manifest.determinism.cudnn_benchmark", "no"),
        "field manifest.determinism.cudnn_benchmark: input should be a valid boolean, got 'no'",
    ),
    (changed("manifest.packages.torch", 2), "field manifest.packages.torch: input should be a valid string, got 2"),
    (changed("created", "yesterday"), "field created: must be an ISO 8601 date-time, got 'yesterday'"),
    (changed("metrics.test_loss", math.nan), "field metrics.test_loss: input should be a finite number, got nan"),
    (changed("search.wall_time_s", math.inf), "field search.wall_time_s: input should be a finite number, got inf"),
    (changed("notes", "hi"), "unknown field notes (extra fields belong under extras)"),
    (changed("manifest.host", "x"), "unknown field manifest.host (extra fields belong under extras)"),
    (changed("metrics.perplexity", 3.0), "unknown field metrics.perplexity (a task's metrics are recorded as test_"),
    (changed("metrics", None), "field metrics must not be null when status is 'ok'"),
    (changed("error", "boom"), "field error must be null when status is 'ok', got 'boom'"),
    (changed("status", "failed"), "field error must say what went wrong when status is 'failed'"),
    (changed("schema_version", 4), "field schema_version is 4, newer than this egs-bench reads (3); upgrade"),
    (changed("schema_version", "3"), "field schema_version must be 3, got '3'"),
    (changed("schema_version", 1), "field schema_version is 1, an older record: read it with read_record"),
    (changed("schema_version", 2), "field schema_version is 2, an older record: read it with read_record"),
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
        "field metrics.test_error: input should be a valid number, got 'abc'",
        "missing field manifest.git_sha",
    ]
    nothing = make_record(metrics=None, search=None, error="boom")
    with pytest.raises(RecordError, match="3 problems") as err:
        validate_record(nothing)
    assert err.value.problems == [
        "field metrics must not be null when status is 'ok'",
        "field search must not be null when status is 'ok'",
        "field error must be null when status is 'ok', got 'boom'",
    ]


def test_a_plug_in_task_records_its_own_metrics():
    metrics = {"test_perplexity": 55.3, "test_loss": None, "params_m": 23.0, "macs_m": None, "search_val_score": 1.0}
    record = validate_record(make_record(task="ptb", metrics=metrics))
    model = Record.model_validate(record)
    assert model.metrics["test_perplexity"] == model.metrics.test_perplexity == 55.3
    assert model.metrics["params_m"] == 23.0 and model.world_size == 1
    with pytest.raises(KeyError):
        model.metrics["test_error"]


def test_checked_in_json_schema_matches_the_model():
    assert SCHEMA_FILE.is_file(), f"{SCHEMA_FILE} missing: run python scripts/write_record_schema.py"
    assert json.loads(SCHEMA_FILE.read_text()) == Record.model_json_schema(), (
        "results/schema/record.schema.json is out of date with benchmark/records.py: "
        "run python scripts/write_record_schema.py and commit the result"
    )
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION
    assert {"world_size", "mixed_precision", "deterministic"} <= set(schema["required"])


def test_other_tools_can_check_records_with_the_exported_schema():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    assert list(validator.iter_errors(make_record())) == []
    assert list(validator.iter_errors(read_record(sorted(GOLDEN_DIR.glob("*.json"))[0]))) == []
    plugin = make_record(metrics={"test_perplexity": 55.3, "params_m": 23.0, "macs_m": None, "search_val_score": None})
    assert list(validator.iter_errors(plugin)) == []
    for bad in (changed("world_size", 0), changed("metrics.perplexity", 1.0), changed("mixed_precision", "fp32")):
        assert list(validator.iter_errors(bad)), bad


def test_write_read_round_trip_and_bad_records_write_nothing(tmp_path):
    path = tmp_path / "run" / "record.json"
    write_record(path, make_record())
    assert read_record(path) == make_record()
    with pytest.raises(RecordError, match=f"record {re.escape(str(tmp_path))}.*metrics.test_error"):
        write_record(tmp_path / "bad.json", changed("metrics.test_error", "abc"))
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["record.json", "run"]


def test_write_record_refuses_nan_and_takes_a_model(tmp_path):
    with pytest.raises(RecordError, match=r"field metrics\.test_error: input should be a finite number, got nan"):
        write_record(tmp_path / "a.json", changed("metrics.test_error", math.nan))
    with pytest.raises(RecordError, match=r"field extras\.curve\.1 is NaN or infinite, which JSON cannot hold"):
        write_record(tmp_path / "b.json", make_record(extras={"curve": [1.0, math.nan]}))  # free-form: json refuses
    assert list(tmp_path.iterdir()) == []
    write_record(tmp_path / "c.json", Record.model_validate(make_record()))
    unmeasured = {"examples_per_s": None, "example_unit": None, "peak_memory_how": None}  # the model's defaults
    unmeasured |= {"memory_format": None, "compiled": None}
    expected = make_record()
    expected |= {
        "extras": {},
        "search": expected["search"] | unmeasured | {"signal": None},
        "evaluate": expected["evaluate"] | unmeasured,
    }
    tf32 = {"cudnn_allow_tf32": None, "matmul_allow_tf32": None}  # fields added after this record's version
    expected["manifest"] = expected["manifest"] | {"determinism": expected["manifest"]["determinism"] | tf32}
    expected["data"] = {"path": None} | expected["data"]  # the data's absolute path: added after this version too
    assert read_record(tmp_path / "c.json") == expected
    assert "NaN" not in (tmp_path / "c.json").read_text()


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
    assert (record["world_size"], record["mixed_precision"], record["deterministic"]) == (1, "no", False)
    assert json.loads((folder / "record.json").read_text()) == v1  # never rewritten on disk
    assert upgrade_record(make_record()) == make_record()  # current records pass through
    (folder / "config.yaml").unlink()
    assert read_record(folder / "record.json")["config"] is None
    write_json(tmp_path / "old.json", v1)  # a loose file: a config.yaml beside it is not its own
    (tmp_path / "config.yaml").write_text("seed: 9\n")
    assert read_record(tmp_path / "old.json")["config"] is None


def test_version_2_records_are_upgraded_in_memory(tmp_path):
    v2 = as_version_2(make_record(extras={"note": "kept"}))
    write_json(tmp_path / "run" / "record.json", v2)
    record = read_record(tmp_path / "run" / "record.json")
    assert record == make_record(extras={"note": "kept", "upgraded_from": 2})
    assert list(record)[:10] == [
        "schema_version",
        "status",
        "error",
        "method",
        "task",
        "space",
        "preset",
        "seed",
        "world_size",
        "mixed_precision",
    ]
    assert json.loads((tmp_path / "run" / "record.json").read_text()) == v2  # never rewritten on disk


V2_RECORDS = Path(__file__).with_name("fixtures") / "records_v2"  # the golden records as committed before schema 3


@pytest.mark.parametrize("path", sorted(V2_RECORDS.glob("*.json")), ids=lambda p: p.stem)
def test_golden_version_2_records_upgrade_and_validate(path):
    on_disk = json.loads(path.read_text())
    assert on_disk["schema_version"] == 2
    record = read_record(path)
    assert record["schema_version"] == SCHEMA_VERSION and record["extras"]["upgraded_from"] == 2
    assert (record["world_size"], record["mixed_precision"], record["deterministic"]) == (1, "no", False)
    assert {k: v for k, v in record.items() if k in on_disk and k != "schema_version"} == {
        k: v for k, v in on_disk.items() if k != "schema_version"
    }
    Record.model_validate(record)


def test_load_records_gathers_run_folders_recursively(tmp_path):
    for i, folder in enumerate(["sweep/egs-0", "sweep/egs-1", "sweep/nested/darts-0"]):
        write_record(tmp_path / folder / "record.json", make_record(seed=i))
        write_json(tmp_path / folder / "genotype.json", {"normal": []})  # other run files are not records
    write_json(tmp_path / "sweep" / "old" / "record.json", as_version_2(make_record(seed=3)))
    (tmp_path / "sweep" / "running").mkdir()  # a run still going: no record yet
    assert [r["seed"] for r in load_records(tmp_path / "sweep")] == [0, 1, 2, 3]
    with pytest.raises(RecordError, match="no folder"):
        load_records(tmp_path / "absent")


def test_bad_record_files_are_reported_with_their_path(tmp_path):
    write_record(tmp_path / "good" / "record.json", make_record())
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "record.json").write_text('{"schema_version": 3, "method": "eg')
    write_json(tmp_path / "wrong" / "record.json", changed("seed", "zero"))
    with pytest.raises(RecordError, match="2 bad record file") as err:
        load_records(tmp_path)
    assert str(tmp_path / "torn" / "record.json") in str(err.value) and "not valid JSON" in str(err.value)
    assert f"record {tmp_path / 'wrong' / 'record.json'}: field seed: input should be a valid integer" in str(err.value)
    assert load_records(tmp_path, strict=False) == [make_record()]


@pytest.mark.parametrize("path", sorted(GOLDEN_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_committed_golden_records_validate(path):
    record = read_record(path)
    assert record["schema_version"] == SCHEMA_VERSION and record["status"] == "ok"
    Record.model_validate(record)
