"""``egsbench demo``'s configs: five methods, one budget, the embedded real CIFAR-10 subset.

The demo's time is checked by hand on a quiet 2-core machine (the README's figure); here, what
keeps it honest and comparable: every config spends the same search and evaluation budget, so
the demo's table compares methods, and the final training sees the whole 1,600-image train split.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import yaml

from egsbench.benchmark.cli import DEMO_CONFIGS
from egsbench.benchmark.config import load_config, resolve_config_path
from egsbench.tasks import TASKS


@pytest.fixture(scope="module")
def configs():
    return {name: load_config(name) for name in DEMO_CONFIGS}


def test_the_demo_runs_each_method_once(configs):
    assert sorted(cfg.method_name for cfg in configs.values()) == ["darts", "egs", "gdas", "random", "snas"]
    assert {cfg.preset for cfg in configs.values()} == {"demo"}


def test_every_method_gets_the_same_budget(configs):
    search = {name: dataclasses.asdict(cfg.search) for name, cfg in configs.items()}
    evaluate = {name: dataclasses.asdict(cfg.evaluate) for name, cfg in configs.items()}
    first = DEMO_CONFIGS[0]
    for name in DEMO_CONFIGS[1:]:
        assert search[name] == search[first], f"{name}: search budget differs from {first}"
        assert evaluate[name] == evaluate[first], f"{name}: evaluation budget differs from {first}"
    assert {dataclasses.asdict(cfg.task)["data_dir"] for cfg in configs.values()} == {"embedded"}


def test_egs_derives_per_node_and_sets_no_ignored_key(configs):
    egs = next(cfg for cfg in configs.values() if cfg.method_name == "egs")
    assert egs.method.derive == "mode"  # DARTS-sized cells: the sampled-candidates derivation is not timed here
    raw = yaml.safe_load(resolve_config_path("demo/egs-cifar10").read_text(encoding="utf-8"))
    assert "derive_candidates" not in raw["method"]  # read only by derive: sample


def test_the_final_training_sees_the_whole_train_split_and_tests_on_400_images(configs):
    cfg = configs[DEMO_CONFIGS[0]]
    task = TASKS.get("cifar10")(cfg.task)
    sizes = task.prepare_data().sizes
    assert (sizes["train"], sizes["test"], sizes["search-train"]) == (1600, 400, 800)
    assert cfg.evaluate.max_steps_per_epoch is None  # every epoch is one pass over the 1,600 images
    search_steps = cfg.search.epochs * min(
        cfg.search.max_steps_per_epoch or math.inf, math.ceil(sizes["search-train"] / cfg.search.batch_size)
    )
    assert cfg.search.epochs >= 2 and search_steps >= 10  # search curves over epochs, alphas moved by some steps
