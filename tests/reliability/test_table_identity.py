"""Table identity (issue 9, items 2 and 7), through ``egsbench table`` on records written as runs write them.

``table`` used to average runs of different configs into one row and count a seed recorded twice twice.
Rows now group by the config hash (seed excluded) plus world size and precision; a repeated seed counts
once (the newer record, with a note); failed runs have their own column and never enter a mean.
"""

from __future__ import annotations

import hashlib
import io
import json

import pandas as pd

from egsbench.benchmark.records import write_record
from tests.harness.test_records import make_record


def run_record(
    seed: int,
    error: float | None,
    lr: float = 0.025,
    created: str = "2026-01-01T00:00:00+00:00",
    status: str = "ok",
    **setup,
) -> dict:
    """A paper-preset EGS (M=7) record of CIFAR-10 whose config differs only in ``search.lr``."""
    config = {"preset": "paper", "seed": seed, "method": {"name": "egs", "M": 7}, "search": {"lr": lr}}
    identity = json.dumps({k: v for k, v in config.items() if k != "seed"}, sort_keys=True)
    record = make_record(
        seed=seed,
        preset="paper",
        created=created,
        config=config,
        **setup,
        config_hash=hashlib.sha256(identity.encode()).hexdigest()[:16],
    )
    record["metrics"] = record["metrics"] | {"test_error": error}
    if status == "failed":
        record |= {"status": "failed", "error": "the run diverged: non-finite loss nan in search epoch 3, step 7"}
    return record


def write_runs(root, records):
    for i, record in enumerate(records):
        write_record(root / f"run{i}" / "record.json", record)
    return root


def csv_table(cli, runs) -> tuple[pd.DataFrame, str]:
    """The reproduced rows of ``egsbench table --format csv`` (the paper's own rows have Preset ``reported``)."""
    result = cli("table", "--runs", runs, "--format", "csv")
    assert result.code == 0, result.err
    table = pd.read_csv(io.StringIO(result.out))
    return table[table["Preset"] != "reported"].reset_index(drop=True), result.err


def test_two_configs_never_share_a_row(cli, tmp_path):
    runs = write_runs(
        tmp_path / "runs",
        [run_record(0, 2.7), run_record(1, 2.9), run_record(0, 4.0, lr=0.1), run_record(1, 4.2, lr=0.1)],
    )
    table, _ = csv_table(cli, runs)
    assert len(table) == 2 and (table["Architecture"] == "DARTS-EGS (M=7)").all()  # both are the paper's M=7 row
    by_config = {
        config.split(" ", 1)[1]: row for config, (_, row) in zip(table["Config"], table.iterrows(), strict=True)
    }
    assert set(by_config) == {"(search.lr=0.025)", "(search.lr=0.1)"}  # the keys that tell the rows apart
    assert by_config["(search.lr=0.025)"]["Test error (%)"] == 2.8 and by_config["(search.lr=0.1)"]["Seeds"] == 2
    assert by_config["(search.lr=0.1)"]["Test error (%)"] == 4.1
    markdown = cli("table", "--runs", runs).out
    assert "| Config |" in markdown and "(search.lr=0.1)" in markdown


def test_a_seed_recorded_twice_counts_once_the_newer_with_a_note(cli, tmp_path):
    runs = write_runs(
        tmp_path / "runs",
        [
            run_record(0, 9.0, created="2026-01-01T00:00:00+00:00"),  # the same run done again later
            run_record(0, 2.7, created="2026-02-01T00:00:00+00:00"),
            run_record(1, 2.9),
        ],
    )
    table, err = csv_table(cli, runs)
    [row] = table.to_dict("records")
    assert row["Seeds"] == 2 and row["Test error (%)"] == 2.8  # 2.7 and 2.9; the older 9.0 is not counted
    assert "Config" not in table  # one config: nothing to tell apart
    assert err.startswith("note: egs/cifar10/paper seed 0 (config ")
    assert "2 records of the same config and seed; counted once, the newest, created 2026-02-01T00:00:00+00:00" in err
    markdown = cli("table", "--runs", runs).out
    assert "\nNote: egs/cifar10/paper seed 0" in markdown


def test_failed_runs_have_their_own_column_and_never_enter_a_mean(cli, tmp_path):
    runs = write_runs(
        tmp_path / "runs",
        [
            run_record(0, 2.7),
            run_record(1, 2.9),
            run_record(2, 99.0, status="failed"),
            run_record(3, None, status="failed"),
        ],
    )
    table, _ = csv_table(cli, runs)
    [row] = table.to_dict("records")
    assert (row["Seeds"], row["Failed"]) == (2, 2)
    assert row["Test error (%)"] == 2.8  # 99.0 of a failed run is not averaged in


def test_world_size_and_precision_are_part_of_a_rows_identity(cli, tmp_path):
    runs = write_runs(
        tmp_path / "runs",
        [
            run_record(0, 2.7),
            run_record(0, 3.0, world_size=8),
            run_record(0, 3.3, world_size=8, mixed_precision="bf16"),
        ],
    )
    table, err = csv_table(cli, runs)
    assert table["Setup"].tolist() == ["x1 fp32", "x8 bf16", "x8 fp32"] and table["Seeds"].tolist() == [1, 1, 1]
    assert err == ""  # the same seed in three setups is three runs, not a repeat
