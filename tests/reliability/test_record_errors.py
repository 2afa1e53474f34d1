"""Bad run records and runs folders (issue 9, item 6): ``report``, ``table`` and ``regress`` validate every record.

Each case exits 2 with one ``error:`` line naming the file and the fix; the runs folder is left byte for
byte as it was (no ``report.html``), and a missing folder is not created.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from egsbench.benchmark.sweep import load_sweep, plan_runs
from egsbench.testing.reliability import snapshot
from tests.harness.test_records import make_record

COMMANDS = [["report"], ["table"], ["table", "--format", "csv"], ["regress"]]


def _without(record: dict, key: str) -> dict:
    return {k: v for k, v in record.items() if k != key}


def _bytes(record: dict) -> bytes:
    return json.dumps(record).encode()


GOOD = make_record()
BAD_RECORDS = {
    "torn": (b'{"schema_version": 3, "meth', "not valid JSON (Unterminated string"),
    "incomplete": (_bytes(_without(GOOD, "metrics")), "missing field metrics"),
    "unknown schema version": (
        _bytes(GOOD | {"schema_version": 9}),
        "field schema_version is 9, newer than this egs-bench reads (3); upgrade egs-bench",
    ),
    "string M": (
        _bytes(GOOD | {"config": GOOD["config"] | {"method": {"name": "egs", "M": "7"}}}),
        "field config.method.M: must be int, got '7' (str)",
    ),
    "not UTF-8": (_bytes(GOOD).replace(b'"egs"', b'"egs\xe9"', 1), "not valid JSON ('utf-8' codec can't decode byte"),
    "NaN": (_bytes(GOOD | {"metrics": GOOD["metrics"] | {"test_error": float("nan")}}), "field metrics.test_error"),
}


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
@pytest.mark.parametrize("case", BAD_RECORDS)
def test_a_bad_record_is_named_and_nothing_is_written(cli, tmp_path, command, case):
    content, problem = BAD_RECORDS[case]
    runs = tmp_path / "runs"
    (runs / "good").mkdir(parents=True)
    (runs / "good" / "record.json").write_text(json.dumps(GOOD))
    (runs / "bad").mkdir()
    (runs / "bad" / "record.json").write_bytes(content)
    before = snapshot(runs)
    result = cli(*command, "--runs", runs)
    assert result.code == 2
    assert f"record {runs / 'bad' / 'record.json'}: {problem}" in result.error
    assert "strict=False" not in result.error  # the CLI has no such switch
    assert result.out == ""
    assert snapshot(runs) == before


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_missing_runs_folder_is_not_created(cli, tmp_path, command):
    runs = tmp_path / "missing"
    result = cli(*command, "--runs", runs)
    assert result.code == 2
    assert result.error == f"error: no folder {runs} to scan for run records; pass the --out folder of a run or sweep"
    assert not runs.exists()


@pytest.mark.parametrize("command", [c for c in COMMANDS if c[0] != "regress"], ids=" ".join)
def test_an_empty_runs_folder_is_an_error_not_an_empty_table(cli, tmp_path, command):
    runs = tmp_path / "runs"
    (runs / "still-running").mkdir(parents=True)  # a run folder without a record yet
    before = snapshot(runs)
    result = cli(*command, "--runs", runs)
    assert result.code == 2
    assert result.error.startswith(f"error: no run records (record.json) under {runs}")
    assert result.error.endswith("pass --runs the --out folder of a finished run or sweep")
    assert snapshot(runs) == before


def test_regress_on_an_empty_runs_folder_flags_every_golden_run_as_missing(cli, tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    result = cli("regress", "--runs", runs)
    assert result.code == 1  # a regression, as CI needs: the fresh runs it compares against are not there
    assert "no fresh run" in result.out and result.err == ""
    assert snapshot(runs) == {}


def test_a_sweep_does_not_start_over_an_unreadable_record(cli, tmp_path):
    """A non-UTF-8 record.json crashed ``sweep``; it must neither crash nor overwrite the file."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump({"name": "t", "methods": ["gdas"], "tasks": ["cifar10"], "presets": ["smoke"], "seeds": [0, 1]})
    )
    out = tmp_path / "out"
    first, _ = plan_runs(load_sweep(sweep), out)
    bad = Path(first.folder) / "record.json"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(_bytes(GOOD).replace(b'"egs"', b'"egs\xe9"', 1))
    before = snapshot(out)
    result = cli("sweep", sweep, "--out", out)
    assert result.code == 2
    assert f"record {bad}: not valid JSON ('utf-8' codec can't decode byte" in result.error
    assert result.error.endswith("Nothing ran; move or delete them and run the sweep again")
    assert snapshot(out) == before  # the other run did not start either
