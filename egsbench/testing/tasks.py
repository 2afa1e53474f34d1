"""Checks every task must pass: data per split, networks for a space and a genotype, losses and metrics.

They run on a task *instance* whose data is available, built from the task class's
``conformance_config(tmp_path)`` (a tiny data config); each raises ``AssertionError`` saying what is wrong::

    check_task(conformance_task(MyTask, tmp_path))  # MyTask(MyTask.conformance_config(tmp_path))

What each check verifies and how a plug-in runs them: docs/adding-a-task.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..tasks.base import SPLITS, WEIGHT_FIELDS, Metric, Task
from ..tasks.spaces import DARTS_V2, GENOTYPES, SPACES, Genotype, count_macs

__all__ = [
    "TASK_CHECKS",
    "check_data_splits",
    "check_declares_metrics",
    "check_final_network",
    "check_supernet_search_loss",
    "check_task",
    "conformance_task",
    "nested_equal",
]

BATCH = 4


def conformance_task(task_cls: type, tmp_path: str | Path) -> Any:
    """Build ``task_cls`` on the tiny data of its ``conformance_config(tmp_path)`` class method (a ``Task``
    subclass that does not override it gets ``NotImplementedError`` saying what to add)."""
    return task_cls(task_cls.conformance_config(Path(tmp_path)))


REQUIRED = (
    "prepare_data",
    "loader",
    "build_network",
    "example_input",
    "make_optimizer",
    "train_loss",
    "eval_sums",
    "summarize",
)


def _required_missing(task) -> list[str]:
    """The required ``Task`` members ``task``'s class leaves as the base's (which raise ``NotImplementedError``),
    and the class attributes without a default it does not set."""
    cls = type(task)
    missing = [name for name in REQUIRED if getattr(cls, name) is getattr(Task, name)]
    if cls.build_supernet is not Task.build_supernet and cls.search_loss is Task.search_loss:
        missing.append("search_loss")  # a task that can search must give the supernet's loss
    attrs = ("config_class", "metrics", "main_metric", "score_key")
    return missing + [name for name in attrs if not any(name in vars(c) for c in cls.__mro__ if c is not Task)]


def _first_batch(task, split: str, seed: int = 0, recipe=None):
    torch.manual_seed(seed)  # augmentation may draw from the global generator
    return next(iter(task.loader(split, BATCH, torch.Generator().manual_seed(seed), recipe)))


def nested_equal(a, b) -> bool:
    """Bitwise equality of nested values: tensors, sequences and mappings of them (batches, state dicts), other
    leaves by ``==``."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and a.keys() == b.keys() and all(nested_equal(a[k], b[k]) for k in a)
    if isinstance(a, Sequence) and not isinstance(a, str):
        return (
            isinstance(b, Sequence) and len(a) == len(b) and all(nested_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    return a == b


def check_declares_metrics(task) -> None:
    """The task has every member of the ``Task`` protocol and names its metrics with a direction."""
    name = type(task).__name__
    assert isinstance(task, Task), f"{name} must subclass egsbench.tasks.Task (its optional hooks have defaults)"
    missing = _required_missing(task)
    assert not missing, f"{type(task).__name__} lacks members of the Task protocol: {missing}"
    search_fields = {f.name for f in dataclasses.fields(_recipes(task)[0])}
    lacking = [k for k in WEIGHT_FIELDS if k not in search_fields]
    assert not lacking, f"the task's search block lacks the weight-optimiser fields methods read: {lacking}"
    for block in (task.search_config_class, task.train_config_class):
        lr_fields = getattr(block, "lr_fields", None)  # what lr_scaling: linear multiplies by the world size
        assert lr_fields is not None, f"{block.__name__} must declare lr_fields (its learning-rate keys)"
        unknown = sorted(set(lr_fields) - {f.name for f in dataclasses.fields(block)})
        assert not unknown, f"{block.__name__}.lr_fields names {unknown}, which are not its fields"
    metrics = {m.name: m for m in task.metrics}
    assert metrics, "a task must declare at least one Metric in `metrics`"
    for m in task.metrics:
        assert isinstance(m, Metric), f"{m!r} in `metrics` is not a Metric(name, direction, label)"
    assert task.main_metric in metrics, f"main_metric {task.main_metric!r} is not among {sorted(metrics)}"
    assert task.score_key in metrics, f"score_key {task.score_key!r} is not among {sorted(metrics)}"


def check_data_splits(task) -> None:
    """``prepare_data`` reports every split, non-empty, with a stable checksum; loaders are seedable."""
    info = task.prepare_data()
    assert info.source, "DataInfo.source must say where the data came from"
    assert isinstance(info.sha256, str) and len(info.sha256) == 64, "DataInfo.sha256 must be a sha256 hex digest"
    for split in SPLITS:
        assert info.sizes.get(split, 0) > 0, f"split {split!r} is empty or missing from DataInfo.sizes {info.sizes}"
    again = task.prepare_data()
    assert again.sha256 == info.sha256, "preparing the same data twice gave two checksums"
    assert dict(again.sizes) == dict(info.sizes), "preparing the same data twice gave two sets of split sizes"
    for split in SPLITS:
        first = _first_batch(task, split, seed=0)
        assert nested_equal(first, _first_batch(task, split, seed=0)), (
            f"split {split!r}: the same seeds gave two different first batches (seed every random draw from the "
            "loader's generator or torch's global one)"
        )


def _recipes(task) -> tuple[Any, Any]:
    """The task's tiny (search, evaluate) configs."""
    return task.conformance_recipes()


def check_supernet_search_loss(task, space: str | None = None) -> None:
    """A tiny supernet of ``space`` (default the task's ``conformance_space``, else ``dag``) gives a finite loss whose
    gradient reaches the weights, and a candidate score."""
    space = SPACES.get(space or task.conformance_space)
    task.prepare_data()  # as the runner does before it asks for loaders
    train, val = _first_batch(task, "search-train"), _first_batch(task, "search-val")
    net = task.build_supernet(space, _recipes(task)[0])
    weights = {t: torch.full((len(space.edges), len(space.ops)), 1.0 / len(space.ops)) for t in space.cell_types}
    out = task.search_loss(net, train, weights)
    assert out.loss.dim() == 0 and math.isfinite(out.loss.item()), f"search loss is {out.loss!r}, not a finite scalar"
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()), (
        "no gradient reached the supernet weights from search_loss"
    )
    net.eval()
    metrics = task.summarize(task.eval_sums(net, val, weights))
    assert math.isfinite(metrics.get(task.score_key, math.nan)), (
        f"summarize(eval_sums(supernet, batch, weights)) lacks a finite score_key {task.score_key!r}: {metrics}"
    )


def check_final_network(task, genotype: Genotype | None = None) -> None:
    """The final network of a genotype trains one step, reports every declared metric and counts its MACs."""
    default = task.conformance_genotype  # e.g. a recurrent cell for a language-model task (a name or a Genotype)
    genotype = genotype or (GENOTYPES.get(default) if isinstance(default, str) else default) or DARTS_V2
    task.prepare_data()
    recipe = _recipes(task)[1]
    net = task.build_network(genotype, recipe)
    optimizer = task.make_optimizer(net, recipe)
    state = task.start_epoch(net, optimizer, 0, recipe)
    out = task.train_loss(net, _first_batch(task, "train", recipe=recipe), recipe, state)
    assert out.loss.dim() == 0 and math.isfinite(out.loss.item()), f"training loss is {out.loss!r}"
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()), (
        "no gradient reached the final network from train_loss"
    )
    net.eval()
    metrics = task.summarize(task.eval_sums(net, _first_batch(task, "test")))
    for m in task.metrics:
        assert m.name in metrics and math.isfinite(metrics[m.name]), f"summarize() lacks a finite {m.name!r}"
    example = task.example_input()
    example = example if isinstance(example, tuple) else (example,)
    assert count_macs(net, *example).total > 0, "the final network counts no MACs on example_input()"


TASK_CHECKS = (check_declares_metrics, check_data_splits, check_supernet_search_loss, check_final_network)


def check_task(task, space: str | None = None, genotype: Genotype | None = None) -> None:
    """Run every task check on ``task`` (an instance whose data is available).

    Args:
        task: e.g. ``conformance_task(MyTask, tmp_path)``.
        space: the search space of the supernet check.
        genotype: the final network's architecture (default DARTS V2, a ``darts``-space genotype).
    """
    check_declares_metrics(task)
    check_data_splits(task)
    check_supernet_search_loss(task, space)
    check_final_network(task, genotype)
