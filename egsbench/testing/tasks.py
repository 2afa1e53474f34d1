"""Checks every task must pass: data per split, networks for a space and a genotype, losses and metrics.

Run on a task *instance* whose data is available (a small fixture is enough); the checks use
a tiny supernet and a two-cell final network, so they take seconds on a CPU.
"""

from __future__ import annotations

import math

import torch

from ..tasks.base import SPLITS, Metric
from ..tasks.spaces import SPACES, Genotype

__all__ = ["TASK_CHECKS", "check_task"]


def _first_batch(task, split: str, batch_size: int = 4):
    return next(iter(task.loader(split, batch_size, torch.Generator().manual_seed(0))))


def check_declares_metrics(task) -> None:
    """The task names its metrics with a direction, a main metric among them and a candidate score."""
    metrics = {m.name: m for m in task.metrics}
    assert metrics, "a task must declare at least one Metric in `metrics`"
    for m in task.metrics:
        assert isinstance(m, Metric) and m.direction in ("max", "min"), f"metric {m!r} needs direction max|min"
    assert task.main_metric in metrics, f"main_metric {task.main_metric!r} is not among {sorted(metrics)}"
    assert task.score_key in metrics, f"score_key {task.score_key!r} is not among {sorted(metrics)}"


def check_data_splits(task) -> None:
    """``prepare_data`` reports every split with a positive size and a checksum; each split yields a batch."""
    info = task.prepare_data()
    assert info.source and len(info.sha256) == 64, "DataInfo needs a source and a sha256 checksum"
    for split in SPLITS:
        assert info.sizes.get(split, 0) > 0, f"split {split!r} is empty or missing from DataInfo.sizes"
        assert _first_batch(task, split) is not None


def check_supernet_search_loss(task, space: str = "dag") -> None:
    """A tiny supernet of ``space`` gives a finite loss whose gradient reaches the weights."""
    space = SPACES.get(space)
    net = task.build_supernet(space, 4, 3)
    weights = {t: torch.full((len(space.edges), len(space.ops)), 1.0 / len(space.ops)) for t in space.cell_types}
    out = task.search_loss(net, _first_batch(task, "search-train"), weights)
    assert math.isfinite(out.loss.item()), f"search loss is {out.loss.item()}"
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()), "no gradient reached"


def check_final_network(task, genotype: Genotype | None = None) -> None:
    """The final network of a genotype trains one step and its metric sums summarize to every declared metric."""
    from ..tasks.spaces import DARTS_V2

    genotype = genotype or DARTS_V2
    recipe = task.train_config_class(channels=4, layers=3, epochs=1, batch_size=4)
    net = task.build_network(genotype, recipe)
    task.start_epoch(net, 0, recipe)
    out = task.train_loss(net, _first_batch(task, "train"), recipe)
    assert math.isfinite(out.loss.item()), f"training loss is {out.loss.item()}"
    out.loss.backward()
    net.eval()
    sums = task.eval_sums(net, _first_batch(task, "test"))
    metrics = task.summarize(sums)
    for m in task.metrics:
        assert m.name in metrics and math.isfinite(metrics[m.name]), f"summarize() lacks a finite {m.name!r}"
    assert task.example_input().shape[0] == 1, "example_input() must carry a batch axis of 1"


TASK_CHECKS = (check_declares_metrics, check_data_splits, check_supernet_search_loss, check_final_network)


def check_task(task) -> None:
    """Run every task check on ``task`` (an instance whose data is available)."""
    for check in TASK_CHECKS:
        check(task)
