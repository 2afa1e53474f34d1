"""Determinism of every method, the regression gate against the committed golden records, sweeps and reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from egsbench.benchmark.cli import main
from egsbench.benchmark.config import load_config
from egsbench.benchmark.records import read_record
from egsbench.benchmark.regress import (
    GOLDEN_DIR,
    calibrate,
    compare_golden,
    compare_reported,
    golden_tolerance,
    load_tolerances,
)
from egsbench.benchmark.runner import run_experiment
from egsbench.methods import METHODS
from egsbench.tasks import TASKS, Metric
from egsbench.testing.reliability import FAST
from tests.conftest import SMOKE_THREADS
from tests.harness.test_tables import PennTreebank, ptb_record

GOLDEN = sorted(GOLDEN_DIR.glob("*.json"))


@pytest.fixture(scope="module")
def smoke_runs(shipped_smoke, tmp_path_factory) -> dict[str, Path]:
    """Every method's shipped smoke run twice with the same seed: ``{"a": root, "b": root}``, ``root/<method>`` each
    (a: the session's shared runs, a folder of those only; b without its figures, drawn after every number and not
    part of a run's identity)."""
    b = tmp_path_factory.mktemp("smoke-runs")
    for name in METHODS.names():
        a = shipped_smoke(name).parent
        cfg = load_config(f"smoke/{name}-cifar10", ["figures=false", SMOKE_THREADS])  # as shipped_smoke runs them
        run_experiment(cfg, b / name, progress=False)
    return {"a": a, "b": b}


@pytest.mark.parametrize("method", METHODS.names())
def test_same_config_and_seed_give_identical_genotype_and_metrics(smoke_runs, method):
    a = json.loads((smoke_runs["a"] / method / "record.json").read_text())
    b = json.loads((smoke_runs["b"] / method / "record.json").read_text())
    assert a["genotype"] == b["genotype"]
    assert a["metrics"] == b["metrics"]
    assert (smoke_runs["a"] / method / "search_curves.csv").read_text().split("seconds")[0] == (
        smoke_runs["b"] / method / "search_curves.csv"
    ).read_text().split("seconds")[0]


def test_golden_records_cover_every_method():
    assert {json.loads(p.read_text())["method"] for p in GOLDEN} == set(METHODS.names())


def test_regress_passes_on_fresh_runs(smoke_runs, capsys):
    assert main(["regress", "--runs", str(smoke_runs["a"]), "--task", "cifar10"]) == 0
    out = capsys.readouterr().out
    assert "REGRESSION" not in out and "0 regressions" in out and "/ptb/" not in out


ROOT = Path(__file__).resolve().parents[2]
PTB = ROOT.parent / "shared" / "data" / "ptb"
PTB_GOLDEN = [p for p in GOLDEN if json.loads(p.read_text())["task"] == "ptb"]


@pytest.mark.skipif(not (PTB / "ptb.valid.txt").is_file(), reason="the shared PTB text (../shared/data/ptb) is absent")
@pytest.mark.parametrize("method", ["egs", "gdas"])  # the two fastest of the PTB golden runs; the rest: calibration
def test_regress_passes_on_fresh_ptb_smoke_runs(method, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the golden runs name the data as the calibration sweep did: ../shared/data/ptb
    [gold] = [p for p in PTB_GOLDEN if p.name == f"{method}-ptb-seed0.json"]
    (tmp_path / "golden").mkdir()
    shutil.copy(gold, tmp_path / "golden")
    run_experiment(
        load_config(f"smoke/{method}-ptb", ["task.data_dir=../shared/data/ptb"]),
        tmp_path / "runs" / method,
        progress=False,
    )
    assert main(["regress", "--runs", str(tmp_path / "runs"), "--golden", str(tmp_path / "golden")]) == 0
    out = capsys.readouterr().out
    assert f"{method}/ptb/smoke/0" in out and "test_ppl" in out and "0 regressions" in out


def test_regress_task_filter_names_a_task_without_golden_records(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert main(["regress", "--runs", str(tmp_path / "runs"), "--task", "voc"]) == 2
    err = capsys.readouterr().err
    assert "--task voc: no golden record of that task" in err and "cifar10" in err


def test_regress_fails_on_a_moved_golden_number(smoke_runs, tmp_path, capsys):
    golden = tmp_path / "golden"
    shutil.copytree(GOLDEN_DIR, golden)
    path = golden / "egs-cifar10-seed0.json"
    record = json.loads(path.read_text())
    tolerance = load_tolerances()["golden"]["egs/cifar10"]["test_accuracy"]
    record["metrics"]["test_accuracy"] += tolerance + 5.0
    path.write_text(json.dumps(record))
    assert main(["regress", "--runs", str(smoke_runs["a"]), "--golden", str(golden), "--task", "cifar10"]) == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "REGRESSION" in line)
    assert "egs/cifar10/smoke/0" in line and "test_accuracy" in line
    assert "1 regressions" in out


def test_regress_flags_a_missing_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["regress", "--runs", str(tmp_path / "empty")]) == 1
    assert "no fresh run" in capsys.readouterr().out


def test_reported_numbers_gate_paper_records():
    record = json.loads(GOLDEN[0].read_text())
    paper = dict(record, preset="paper", method="darts", config={"method": {"name": "darts", "order": 2}})
    paper["metrics"] = dict(record["metrics"], test_error=2.80)  # reported 2.76 +- 0.09
    tolerances = {"reported": {"test_error": 0.27}, "golden": {}}
    [check] = [c for c in compare_reported([paper], tolerances) if c.metric == "test_error"]
    assert check.ok and check.expected == pytest.approx(2.76)
    paper["metrics"]["test_error"] = 3.2
    [check] = [c for c in compare_reported([paper], tolerances) if c.metric == "test_error"]
    assert not check.ok


def test_reported_perplexity_gates_paper_ptb_records_lower_is_better():
    record = json.loads(GOLDEN[0].read_text())
    paper = dict(record, preset="paper", method="darts", task="ptb", config={"method": {"name": "darts", "order": 2}})
    tolerances = load_tolerances()
    for ppl, ok in ((56.6, True), (50.0, True), (56.9, False)):  # reported 55.7, tolerance 1.0; lower is better
        paper["metrics"] = {"test_ppl": ppl, "test_loss": 4.0, "params_m": 23.0}
        [check] = [c for c in compare_reported([paper], tolerances) if c.metric == "test_ppl"]
        assert check.expected == pytest.approx(55.7) and check.ok is ok, ppl


def test_calibrate_uses_the_seed_spread():
    base = json.loads(GOLDEN[0].read_text())
    runs = [dict(base, seed=s, metrics=dict(base["metrics"], test_accuracy=a)) for s, a in enumerate((10, 12, 14))]
    tol = calibrate(runs)[f"{base['method']}/{base['task']}"]
    assert tol["test_accuracy"] == pytest.approx(3 * 2.0)
    assert tol["seeds"] == 3


def test_calibrate_keeps_tasks_apart_and_a_plain_method_key_still_applies():
    base = json.loads(GOLDEN[0].read_text())
    cifar = [dict(base, seed=s, metrics=dict(base["metrics"], test_accuracy=a)) for s, a in enumerate((10, 12, 14))]
    ptb = [
        dict(base, task="ptb", seed=s, metrics={"test_ppl": p, "test_loss": 6.0, "params_m": 0.01})
        for s, p in enumerate((900.0, 910.0, 920.0))
    ]
    tol = calibrate(cifar + ptb)
    method = base["method"]
    assert tol[f"{method}/cifar10"]["test_accuracy"] == pytest.approx(6.0)
    assert tol[f"{method}/ptb"]["test_ppl"] == pytest.approx(30.0) and "test_accuracy" not in tol[f"{method}/ptb"]
    assert golden_tolerance({method: {"test_loss": 1.0}}, method, "cifar10") == {"test_loss": 1.0}  # older files
    assert golden_tolerance(tol, method, "ptb") == tol[f"{method}/ptb"]


def test_sweep_skips_finished_runs_and_records_failures(tmp_path, capsys):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "methods": ["gdas"],  # the cheapest run: the test is about the sweep
                "tasks": ["cifar10"],
                "presets": ["smoke"],
                "seeds": [0],
                "set": [*FAST, "figures=true"],  # the report shows the run's figures
                "grid": {"task.data_dir": ["embedded", "/nonexistent/cifar"]},
            }
        )
    )
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--out", str(out), "--report"]) == 1  # one grid value fails
    records = sorted(out.rglob("record.json"))
    assert len(records) == 2
    status = sorted(json.loads(p.read_text())["status"] for p in records)
    assert status == ["failed", "ok"]
    failed = next(json.loads(p.read_text()) for p in records if json.loads(p.read_text())["status"] == "failed")
    assert "CIFAR-10 not found at /nonexistent/cifar" in failed["error"] and failed["metrics"] is None
    printed = capsys.readouterr().out
    assert "1 ran, 0 skipped (done), 1 failed" in printed
    html = (out / "report.html").read_text()
    assert "<table" in html and "data:image/png;base64," in html and "FAILED" in html
    assert "http://" not in html and "https://" not in html  # opens offline

    assert main(["sweep", str(sweep), "--out", str(out)]) == 1
    assert "0 ran, 1 skipped (done), 1 failed" in capsys.readouterr().out

    assert main(["table", "--runs", str(out)]) == 0
    table = capsys.readouterr().out
    assert "|" in table and "Failed" in table


def test_reported_gate_uses_the_main_table_only():
    record = json.loads(GOLDEN[0].read_text())
    egs = dict(record, preset="paper", method="egs", config={"method": {"name": "egs", "M": 4}})
    egs["metrics"] = dict(record["metrics"], test_error=3.01)
    checks = [c for c in compare_reported([egs], {"reported": {"test_error": 0.27}, "golden": {}})]
    assert [(c.metric, c.expected) for c in checks] == [("test_error", pytest.approx(3.01))]  # Table 1, not Table 5


@pytest.mark.parametrize(
    ("direction", "ppl", "ok"),
    [
        ("min", 50.0, True),  # 5.7 below the reported 55.7: better, never a regression
        ("min", 56.5, True),  # worse by 0.8, within the tolerance
        ("min", 57.0, False),  # worse by 1.3
        ("max", 50.0, False),  # the same number read as higher-is-better is 5.7 worse
        ("max", 57.0, True),
    ],
)
def test_the_reported_gate_follows_the_plug_in_metric_direction(monkeypatch, direction, ppl, ok):
    plugin = type("Plugin", (PennTreebank,), {"metrics": (Metric("ppl", direction, "Test perplexity"),)})
    monkeypatch.setitem(TASKS._entries, "ptb", plugin)  # as an installed plug-in task would be
    runs = [ptb_record("darts", s, ppl, {"order": 2}) for s in range(2)]
    [check] = compare_reported(runs, {"reported": {"test_ppl": 1.0}, "golden": {}})
    assert (check.metric, check.expected, check.actual) == ("test_ppl", 55.7, ppl)
    assert check.ok is ok and check.run == "darts/ptb/paper/n=2" and "DARTS (second order)" in check.note
    assert ("better than reported" in check.note) is (ok and abs(ppl - 55.7) > 1.0)


def test_records_of_a_task_that_is_not_installed_fail_the_reported_gate():
    runs = [dict(ptb_record("darts", 0, 55.0, {"order": 2}), task="lm1b")]  # no lm1b task here
    [check] = compare_reported(runs, {"reported": {"test_ppl": 1.0}, "golden": {}})
    assert not check.ok and check.metric == "task" and "task 'lm1b' is not installed" in check.note


def test_golden_records_are_matched_by_setup_too():
    gold = read_record(GOLDEN[0])  # a version-2 record: upgraded to one fp32 process
    tolerances = {"golden": {}, "reported": {}}
    assert [c.ok for c in compare_golden([gold], [gold], tolerances)] == []  # found, nothing to compare
    eight = dict(gold, world_size=8)
    [check] = compare_golden([eight], [gold], tolerances)
    assert not check.ok and check.note == "no fresh run"
    [check] = compare_golden([gold], [eight], tolerances)
    assert check.run.endswith("/x8 fp32") and not check.ok
