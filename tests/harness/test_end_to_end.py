"""search -> derive -> evaluate through the public entry points, on the embedded and the real CIFAR-10."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import yaml

from egsbench.benchmark.cli import main
from egsbench.benchmark.config import load_config
from egsbench.benchmark.phases import arch_entropy
from egsbench.benchmark.run_folder import holds_config
from egsbench.benchmark.runner import run_experiment
from egsbench.benchmark.speed import CHANNELS_LAST_FROM
from egsbench.tasks.spaces import SPACES, Genotype, UserError
from egsbench.testing.reliability import snapshot
from tests.conftest import SMOKE_THREADS

RECORD_KEYS = {
    "schema_version",
    "method",
    "task",
    "space",
    "preset",
    "seed",
    "config_hash",
    "metrics",
    "genotype",
    "search",
    "evaluate",
    "data",
    "manifest",
    "created",
}


def check_run_folder(folder, cfg):
    record = json.loads((folder / "record.json").read_text())
    assert RECORD_KEYS <= set(record)
    assert (record["method"], record["task"], record["preset"], record["seed"]) == (
        cfg.method_name,
        cfg.task_name,
        cfg.preset,
        cfg.seed,
    )
    m = record["metrics"]
    assert 0.0 <= m["test_accuracy"] <= 100.0 and m["test_error"] == pytest.approx(100.0 - m["test_accuracy"])
    assert m["params_m"] > 0 and m["macs_m"] > 0
    assert record["search"]["wall_time_s"] > 0 and record["search"]["steps"] > 0
    signal = record["search"]["signal"]  # every method here learns a distribution but random search and fixed cells
    assert (signal is None) == (cfg.method_name in ("random", "fixed"))
    if signal is not None:
        assert signal["entropy_drop_frac"] == pytest.approx(signal["entropy_start_frac"] - signal["entropy_end_frac"])
        assert 0 <= signal["entropy_end_frac"] <= 1 + 1e-9 and signal["ops"] == len(SPACES.get(record["space"]).ops)
    assert {"torch", "accelerate", "egs-bench"} <= set(record["manifest"]["packages"])
    assert record["manifest"]["device"]
    assert len(record["data"]["sha256"]) == 64
    genotype = Genotype.load(folder / "genotype.json")
    SPACES.get(record["space"]).validate(genotype)
    assert genotype.to_dict() == record["genotype"]
    assert yaml.safe_load((folder / "config.yaml").read_text()) == cfg.to_dict()
    for cell_type in ("normal", "reduce"):
        png = (folder / f"cell_{cell_type}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    search_rows = list(csv.DictReader(open(folder / "search_curves.csv")))
    eval_rows = list(csv.DictReader(open(folder / "eval_curves.csv")))
    assert len(search_rows) == cfg.search.epochs and len(eval_rows) == cfg.evaluate.epochs
    assert {"loss", "accuracy", "tau", "lr", "ops_per_edge", "arch_entropy"} <= set(search_rows[0])
    assert "test_accuracy" in eval_rows[-1]
    assert not list(folder.glob(".*.tmp"))  # no temporary files left behind
    return record


def test_smoke_run_on_embedded_data(shipped_smoke):
    """The shipped smoke run's folder (the session's shared run; the returned record equals the written one:
    test_records.py)."""
    cfg = load_config("smoke/egs-cifar10", [SMOKE_THREADS])  # as shipped_smoke runs it
    folder = shipped_smoke("egs")
    record = check_run_folder(folder, cfg)
    assert record["data"]["source"] == "embedded:cifar10_demo.npz"
    for phase, batch in (("search", cfg.search.batch_size), ("evaluate", cfg.evaluate.batch_size)):
        cost = record[phase]
        assert cost["example_unit"] == "images" and cost["peak_memory_how"] and cost["peak_memory_mb"] > 0
        # every step trains on one full batch, so images/s = steps/s x batch (both over the same wall time)
        assert cost["examples_per_s"] == pytest.approx(cost["steps_per_s"] * batch, rel=1e-9), phase
    # memory_format auto: each phase records the layout the rule gives its own network on the run's device
    assert cfg.memory_format == "auto"
    device = "cpu" if record["manifest"]["device"].startswith("cpu (") else "cuda"  # a GPU's entry is its name
    for phase, width in (("search", cfg.search.channels), ("evaluate", cfg.evaluate.channels)):
        threshold = CHANNELS_LAST_FROM[device, torch.float32]
        wide = threshold is not None and width >= threshold
        assert record[phase]["memory_format"] == ("channels_last" if wide else "contiguous"), phase
    before = snapshot(folder)
    with pytest.raises(UserError, match="already exists"):
        run_experiment(cfg, folder, progress=False)
    assert snapshot(folder) == before  # refused before writing anything


def test_figures_false_writes_every_file_but_the_figures(shipped_smoke, tmp_path):
    """``figures: false`` leaves out the PNGs only; the key is not part of the run's identity (its hash)."""
    cfg = load_config("smoke/egs-cifar10", ["figures=false"])
    assert not cfg.figures and cfg.hash() == load_config("smoke/egs-cifar10").hash()
    run_experiment(cfg, tmp_path / "run", progress=False)
    drawn = {p.name for p in shipped_smoke("egs").iterdir()}
    written = {p.name for p in (tmp_path / "run").iterdir()}
    assert written == {name for name in drawn if not name.endswith(".png")} and len(drawn - written) == 5
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["figures"] is False
    assert holds_config(tmp_path / "run", load_config("smoke/egs-cifar10"))  # a resume may draw them
    assert not holds_config(tmp_path / "run", load_config("smoke/egs-cifar10", ["seed=1"]))


@pytest.mark.slow
def test_smoke_run_on_real_cifar10_via_cli(cifar_tar, tmp_path, capsys):
    out = tmp_path / "real"
    args = [
        "run",
        "smoke/egs-cifar10",
        "--out",
        str(out),
        "--no-progress",
        "--set",
        f"task.data_dir={cifar_tar}",
        "--set",
        "task.train_limit=256",  # the smoke preset's sizes, of real images: the property is the real data path
        "--set",
        "task.test_limit=128",
    ]
    assert main(args) == 0
    cfg = load_config("smoke/egs-cifar10", [a for a in args if "=" in a])
    record = check_run_folder(out, cfg)
    assert record["data"]["source"] == f"imagefolder-tar:{cifar_tar}"
    assert record["data"]["sizes"] == {"search-train": 128, "search-val": 128, "train": 256, "test": 128}
    printed = capsys.readouterr().out
    assert "test_accuracy" in printed and "egs" in printed


def test_arch_entropy_is_log_k_for_uniform_and_zero_for_one_hot():
    k = 8
    uniform = {"normal": torch.full((14, k), 1 / k), "reduce": torch.full((14, k), 1 / k)}
    assert arch_entropy(uniform) == pytest.approx(math.log(k))
    one_hot = {"normal": torch.eye(k)[torch.arange(14) % k]}
    assert arch_entropy(one_hot) == pytest.approx(0.0, abs=1e-12)
    mixed = {"normal": torch.tensor([[0.5, 0.5, 0.0]]), "reduce": torch.tensor([[1.0, 0.0, 0.0]])}
    assert arch_entropy(mixed) == pytest.approx(math.log(2) / 2)  # the mean over edges of both cell types
    assert arch_entropy({}) is None
