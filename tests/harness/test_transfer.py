"""Transfer as one pipeline (``transfer_from``): the paper's WikiText-2 protocol, a PTB search's cell trained on
WikiText-2 in one command, on LM files written in the official layouts (``ptb.{split}.txt``, ``wiki.{split}.tokens``).

What is checked: how a transfer config resolves (the source's method, space and search; overrides reach the
search), the run (the source searched once into ``<out>/source`` and reused by config hash and seed; a finished
run folder reused as is; waiting for a source folder another process holds), the record (the source search's
cost, ``extras.transfer``), the tables (the transfer under Table 4's row with the PTB search's cost; a WikiText-2
search in its own group, no Δ), the sweep (a transfer reuses the sweep's own PTB run and runs after it), and the
bundled paper configs covering the papers' rows."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from egsbench.benchmark import runner, transfer
from egsbench.benchmark.config import load_config, parse_config, resolve_config_path
from egsbench.benchmark.records import read_record
from egsbench.benchmark.references import TABLES, config_rows, load_reference, references_for, row_label
from egsbench.benchmark.run_folder import CLAIM, run_lock
from egsbench.benchmark.runner import run_experiment, run_search
from egsbench.benchmark.sweep import SweepSpec, _waves, plan_runs
from egsbench.benchmark.tables import comparison_table
from egsbench.tasks.lm import write_lm_files
from egsbench.tasks.spaces import ConfigError, UserError

SMALL = ["task.max_tokens=400", "figures=false"]  # (not part of a run's identity: sources still match)


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lm")
    return {
        "ptb": write_lm_files(root / "ptb", "ptb.{split}.txt", lines=80),
        "wt2": write_lm_files(root / "wt2", "wiki.{split}.tokens", lines=80, seed=1),
    }


@pytest.fixture
def ptb_env(lm_data, monkeypatch):
    """The PTB search reads its data where its own config says: here $EGSBENCH_PTB."""
    monkeypatch.setenv("EGSBENCH_PTB", str(lm_data["ptb"]))
    return lm_data


def _wt2(lm_data, *more: str) -> list[str]:
    return [f"task.data_dir={lm_data['wt2']}", *SMALL, *more]


# -- configs ------------------------------------------------------------------------------------------
def test_a_transfer_config_takes_method_space_and_search_from_its_source():
    cfg = load_config("smoke/egs-wt2", ["method.M=7", "seed=3"])
    source = load_config("smoke/egs-ptb", ["method.M=7", "seed=3"])
    assert cfg.task_name == "wt2" and cfg.transfer.source == "smoke/egs-ptb" and cfg.transfer.task == "ptb"
    assert (cfg.method, cfg.space, cfg.search) == (source.method, source.space, source.search)
    assert cfg.source_config().to_dict() == source.to_dict()  # the override reaches the search, at this seed
    again = parse_config(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))  # config.yaml of the run, read back
    assert again.hash() == cfg.hash() and again.transfer == cfg.transfer
    assert cfg.hash() != load_config("smoke/egs-wt2").hash()  # another search is another experiment


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("smoke/egs-ptbb", "transfer_from: unknown config 'smoke/egs-ptbb'; did you mean 'smoke/egs-ptb'"),
        ("smoke/egs-wt2", "smoke/egs-wt2 is itself a transfer config; name the search config it transfers from"),
        ("smoke/darts_v2_rnn-ptb", "runs method fixed, which searches nothing"),
        (3, "transfer_from must be a config name"),
    ],
)
def test_bad_transfer_sources_are_refused_at_config_time(value, message, tmp_path):
    raw = yaml.safe_load(resolve_config_path("smoke/egs-wt2").read_text())
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(raw | {"transfer_from": value})


def test_a_folder_that_is_not_a_run_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a folder without config.yaml, not a run folder"):
        load_config("smoke/egs-wt2", [f"transfer_from={tmp_path}"])


# -- runs ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipeline(lm_data, tmp_path_factory):
    """One smoke PTB -> WT2 transfer and one WT2 search, run once for the tests below."""
    root = tmp_path_factory.mktemp("pipeline")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EGSBENCH_PTB", str(lm_data["ptb"]))
        transfer = run_experiment(load_config("smoke/egs-wt2", _wt2(lm_data)), root / "wt2", progress=False)
        own = run_experiment(load_config("smoke/egs-wt2-search", _wt2(lm_data)), root / "wt2-search", progress=False)
    return {"root": root, "transfer": transfer.record, "search": own.record}


def test_the_transfer_runs_the_source_search_once_and_trains_its_cell(pipeline):
    source = pipeline["root"] / "wt2" / "source"
    found = json.loads((source / "search_result.json").read_text())
    record = pipeline["transfer"]
    assert not (source / "record.json").exists()  # search and derivation only: --resume there trains the PTB cell
    assert yaml.safe_load((source / "config.yaml").read_text())["task"]["name"] == "ptb"
    assert record["task"] == "wt2" and record["genotype"] == found["genotype"]
    # Table 4's search cost is the PTB search's, not the derivation's
    assert record["search"] == found["cost"] | {"signal": found["signal"]}
    transfer = record["extras"]["transfer"]
    assert transfer["task"] == "ptb" and transfer["from"] == "smoke/egs-ptb" and transfer["folder"] == str(source)
    assert transfer["config_hash"] == load_config("smoke/egs-ptb").hash()
    assert record["extras"]["genotype_source"]["path"] == str(source / "genotype.json")


def test_a_second_transfer_reuses_the_search_and_a_finished_ptb_run_counts_too(
    pipeline, ptb_env, tmp_path, monkeypatch
):
    def no_search(*args, **kwargs):
        raise AssertionError("the source search ran again")

    source = pipeline["root"] / "wt2" / "source"
    monkeypatch.setattr(runner, "search", no_search)
    again = run_experiment(
        load_config("smoke/egs-wt2", _wt2(ptb_env)), tmp_path / "again", source_run=source, progress=False
    ).record
    assert again["genotype"] == pipeline["transfer"]["genotype"] and again["search"] == pipeline["transfer"]["search"]
    monkeypatch.undo()
    monkeypatch.setenv("EGSBENCH_PTB", str(ptb_env["ptb"]))
    ptb = run_experiment(load_config("smoke/egs-ptb", ["seed=1"]), tmp_path / "ptb", progress=False).record
    monkeypatch.setattr(runner, "search", no_search)
    reused = run_experiment(
        load_config("smoke/egs-wt2", _wt2(ptb_env, "seed=1")),
        tmp_path / "wt2",
        progress=False,
        source_run=tmp_path / "ptb",
    ).record
    assert reused["genotype"] == ptb["genotype"] and reused["search"] == ptb["search"]
    assert reused["extras"]["transfer"]["seed"] == 1


def test_a_source_folder_of_another_config_or_seed_is_refused(pipeline, ptb_env, tmp_path):
    cfg = load_config("smoke/egs-wt2", _wt2(ptb_env, "seed=5"))  # the folder holds seed 0's search
    with pytest.raises(UserError, match="holds a run of another config than the source search"):
        run_experiment(cfg, tmp_path / "x", source_run=pipeline["root"] / "wt2" / "source", progress=False)
    assert not (tmp_path / "x").exists()


def test_a_run_folder_named_by_transfer_from_is_reused_as_it_is(pipeline, lm_data, tmp_path):
    source = pipeline["root"] / "wt2" / "source"
    record = run_experiment(
        load_config("smoke/egs-wt2", _wt2(lm_data, f"transfer_from={source}")), tmp_path / "w", progress=False
    ).record
    assert record["genotype"] == pipeline["transfer"]["genotype"] and record["extras"]["transfer"]["folder"] == str(
        source
    )
    changed = load_config("smoke/egs-wt2", _wt2(lm_data, f"transfer_from={source}", "method.M=7"))
    with pytest.raises(UserError, match="was searched with other method values than this config gives"):
        run_experiment(changed, tmp_path / "m7", progress=False)


def test_a_run_folder_without_a_finished_search_is_refused(ptb_env, tmp_path):
    folder = tmp_path / "ptb"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(load_config("smoke/egs-ptb").to_dict()))
    with pytest.raises(UserError, match="holds no finished search"):
        run_experiment(
            load_config("smoke/egs-wt2", _wt2(ptb_env, f"transfer_from={folder}")), tmp_path / "w", progress=False
        )


def test_run_search_writes_a_folder_that_resumes_to_the_full_run(ptb_env, tmp_path):
    cfg = load_config("smoke/egs-ptb")
    found = run_search(cfg, tmp_path / "ptb", progress=False)
    assert not (tmp_path / "ptb" / "record.json").exists()
    record = run_experiment(cfg, tmp_path / "ptb", resume=True, progress=False).record
    assert record["genotype"] == found["genotype"] and record["search"] == found["cost"] | {"signal": found["signal"]}
    with pytest.raises(UserError, match="transfers a cell searched elsewhere"):
        run_search(load_config("smoke/egs-wt2"), tmp_path / "w")


def test_a_transfer_waits_for_a_source_folder_another_process_holds(tmp_path, monkeypatch):
    """The source folder is held (a sweep's claim on it): the transfer waits until it is released, then reads it.
    The wait is driven by the lock, not by time: the patched sleep releases the claim at its first call."""
    folder = tmp_path / "source"
    held = run_lock(folder, CLAIM)
    held.__enter__()
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        held.__exit__(None, None, None)

    monkeypatch.setattr(transfer, "time", SimpleNamespace(sleep=sleep))  # the transfer's sleep, not the lock's polls
    transfer._wait_for(folder)
    assert sleeps == [transfer.SOURCE_POLL_S]
    transfer._wait_for(folder)  # free: no wait at all
    assert len(sleeps) == 1


# -- tables ---------------------------------------------------------------------------------------------
def test_table4_puts_the_transfer_under_its_row_and_the_wt2_search_alone(pipeline):
    records = [pipeline["transfer"], pipeline["search"]]
    table = comparison_table(records, "wt2")
    rows = table[table["Preset"] == "smoke"].set_index("Method")
    transfer, own = rows.loc["egs (M=4; ptb search)"], rows.loc["egs (M=4)"]
    assert transfer["Architecture"] == "DARTS-EGS (M=4)" and transfer["Reported"] == 64.6
    hours = pipeline["transfer"]["search"]["device_hours"]
    assert transfer["Search cost (GPU days)"] == pytest.approx(hours / 24)  # the PTB search's device-hours
    assert own["Architecture"] == "egs (M=4)" and pd.isna(own["Reported"]) and pd.isna(own["Δ"])  # no paper row
    position = list(table.index[table["Method"] == "egs (M=4)"])[0]
    reported = list(table.index[table["Architecture"] == "DARTS-EGS (M=7)"])[0]
    assert position > reported  # after the paper's rows, in the groups no row stands for
    assert any("searched on wt2 itself" in note for note in table.attrs["notes"])


def test_regress_holds_only_the_transfer_to_table4(pipeline):
    from egsbench.benchmark.regress import compare_reported

    tolerances = {"reported": {"test_ppl": 1e9}}
    paper = [dict(r, preset="paper") for r in (pipeline["transfer"], pipeline["search"])]
    checks = compare_reported(paper, tolerances)
    assert [c.note for c in checks] == ["DARTS-EGS (M=4)"]  # the WT2 search is held to no row


# -- sweeps ---------------------------------------------------------------------------------------------
def test_a_sweep_links_each_transfer_to_its_own_ptb_run_and_runs_it_after(tmp_path):
    spec = SweepSpec(name="t", methods=["egs", "darts"], tasks=["wt2", "ptb"], presets=["smoke"], seeds=[0, 1])
    runs = plan_runs(spec, tmp_path)
    by_folder = {run.folder: run for run in runs}
    transfers = [run for run in runs if run.config.endswith("-wt2")]
    assert len(transfers) == 4
    for run in transfers:
        source = by_folder[run.source_run]
        assert (
            source.config == run.config.replace("-wt2", "-ptb")
            and source.folder.split("seed")[-1][0] == run.folder.split("seed")[-1][0]
        )
        assert run.command()[-2:] == ["--source-run", run.source_run]
    first, then = _waves(runs)
    assert set(map(id, then)) == set(map(id, transfers)) and not any(r.source_run for r in first)
    alone = plan_runs(SweepSpec(name="t", methods=["egs"], tasks=["wt2"], presets=["smoke"], seeds=[0]), tmp_path)
    assert alone[0].source_run is None and _waves(alone) == [alone]  # searches into its own <run>/source


def test_a_sweep_runs_the_ptb_search_and_its_wt2_transfer(lm_data, tmp_path, monkeypatch):
    from egsbench.benchmark.sweep import run_sweep

    monkeypatch.setenv("EGSBENCH_PTB", str(lm_data["ptb"]))  # each run reads its task's data from the environment
    monkeypatch.setenv("EGSBENCH_WT2", str(lm_data["wt2"]))
    # (no task.* overrides: they would reach the transfer's WT2 block, not its source's PTB block, and the PTB
    # search of the transfer would then be another config than the sweep's PTB run)
    spec = SweepSpec(name="t", methods=["egs"], tasks=["wt2", "ptb"], presets=["smoke"], seeds=[0], threads=1)
    summary = run_sweep(spec, tmp_path)
    assert summary["ran"] == 2 and summary["failed"] == 0, summary
    ptb = read_record(next(tmp_path.glob("smoke/egs-ptb/*/record.json")))
    wt2 = read_record(next(tmp_path.glob("smoke/egs-wt2/*/record.json")))
    assert wt2["genotype"] == ptb["genotype"] and wt2["search"] == ptb["search"]
    assert wt2["extras"]["transfer"]["folder"] == str(next(tmp_path.glob("smoke/egs-ptb/*")))
    assert not list(tmp_path.glob("smoke/egs-wt2/*/source"))


# -- the paper's rows -----------------------------------------------------------------------------------
def test_every_reproducible_paper_row_has_a_bundled_config():
    """Each row of Tables 1-5 and Sec. 4.3.2 that a method here reproduces is reproduced by a bundled paper config
    (Table 5's other M values by the table5-paper sweep's grid over paper/egs-cifar10)."""
    from egsbench.benchmark.config import bundled_configs

    covered = {row for name in bundled_configs() for row in config_rows(load_config(name))}
    sweep = yaml.safe_load(Path(__file__).parents[2].joinpath("results/sweeps/table5-paper.yaml").read_text())
    covered |= {f"Table 5: M={m}" for m in sweep["grid"]["method.M"]}
    wanted = set()
    for table in TABLES:
        frame = load_reference(table)
        wanted |= {row_label(table, row) for _, row in frame[frame["method"].notna()].iterrows()}
    assert len(wanted) == 31 and wanted - covered == set()
    assert config_rows(load_config("proxy/egs-cifar10")) == []  # only paper configs reproduce a reported row
    assert references_for("egs", "wt2", "paper", {"M": 4}).empty  # paper/egs-wt2-search stands for no row


def test_a_failed_source_run_stops_the_transfer_with_its_error(lm_data, tmp_path):
    from egsbench.benchmark.run_folder import failed_record

    source = load_config("smoke/egs-ptb")
    failed_record(source, tmp_path / "ptb", "search diverged at epoch 0")
    with pytest.raises(UserError, match=r"the source run in .*ptb failed \(search diverged at epoch 0\)"):
        run_experiment(
            load_config("smoke/egs-wt2", _wt2(lm_data)), tmp_path / "w", source_run=tmp_path / "ptb", progress=False
        )


def test_list_configs_names_the_row_each_paper_config_reproduces():
    from egsbench.benchmark.cli import config_catalogue

    lines = config_catalogue(["paper/egs-wt2", "paper/egs-wt2-search", "paper/egs_released_m4-imagenet"]).splitlines()
    assert lines[0].startswith("paper/egs-wt2 ")
    assert "[Table 4: DARTS-EGS (M=4)] GPU-days: the paper's WikiText-2" in lines[0]
    assert "[" not in lines[1] and "searching on WikiText-2 itself" in lines[1]
    assert "[Table 2: DARTS-EGS (M=4)]" in lines[2] and all(len(line) <= 34 + 110 for line in lines)
