"""The task seam: data per split, networks, losses, metrics and the training-step details.

A task never touches ``Accelerator``: it hands plain ``DataLoader``s (or plain iterables of batches) and
modules to the runner, which prepares them. Methods reach a task only through ``search_loss`` (wrapped in the
method's :class:`~methods.base.SearchContext`). :class:`Task` declares every member the harness calls, the
optional hooks with their defaults. The config blocks a task owns and how the runner drives a final-training
epoch through its hooks: docs/adding-a-task.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.config import WEIGHT_FIELDS, SearchConfig
from ..core.errors import ConfigError, check_range
from .spaces import EdgeWeights, Genotype, LossOutput, Registry, SearchSpace, Supernet

__all__ = ["TASKS", "CNNSearchConfig", "DataInfo", "Metric", "Task", "TrainConfig", "SPLITS", "WEIGHT_FIELDS"]

# Built-in tasks register themselves when TASKS first looks their name up (their module only: a CIFAR-10 run
# imports no timm); listing all names imports every module (and registers the timm models).
_BUILT_IN = ("cifar", "imagenet", "lm", "nb201", "timm_models", "voc")
_PROVIDES = {"cifar10": "cifar", "imagenet": "imagenet", "nb201": "nb201", "ptb": "lm", "wt2": "lm", "voc2012": "voc"}
TASKS: Registry = Registry(
    "task",
    group="egsbench.tasks",
    modules=tuple(f"egsbench.tasks.{m}" for m in _BUILT_IN),
    provides={name: f"egsbench.tasks.{m}" for name, m in _PROVIDES.items()},
)

# search-train / search-val: the halves of the training set used during search;
# train / test: the official split for final training and the reported metric.
SPLITS = ("search-train", "search-val", "train", "test")
# Cells at layers // 3 and 2 * layers // 3 reduce: 3 cells are the fewest with a normal cell (0) in the supernet;
# the CIFAR auxiliary head, after cell 2 * layers // 3, needs both reductions before it (8x8 at 32 px): 2 cells.
SEARCH_MIN_LAYERS = 3
AUX_MIN_LAYERS = 2


@dataclass
class CNNSearchConfig(SearchConfig):
    """The ``search:`` block of CNN tasks: supernet size, data and the shared weight optimiser (DARTS defaults)."""

    channels: int = 16  # supernet C
    layers: int = 8  # supernet cells L

    def __post_init__(self):
        super().__post_init__()
        for key in ("channels", "layers"):
            check_range(f"search.{key}", getattr(self, key), low=1)
        check_search_layers(self.layers)


@dataclass
class TrainConfig:
    """The ``evaluate:`` block: final training of the derived network (DARTS CIFAR-10 recipe)."""

    lr_fields: ClassVar[tuple[str, ...]] = ("lr", "lr_min")  # what lr_scaling: linear multiplies by the world size

    epochs: int = 600
    batch_size: int = 96
    channels: int = 36  # C of the final network
    layers: int = 20  # cells of the final network
    lr: float = 0.025  # SGD, cosine-annealed per epoch to lr_min
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    cutout: int = 16  # side of the cutout hole in pixels; 0 disables
    drop_path: float = 0.2  # final drop-path probability, ramped linearly from 0 over the epochs
    auxiliary_weight: float = 0.4  # weight of the auxiliary-head loss; 0 builds no head
    label_smoothing: float = 0.0
    max_steps_per_epoch: int | None = None  # None = one pass over the training split
    eval_every: int = 1  # test-set evaluation every N epochs for the curves (the last epoch always)

    def __post_init__(self):
        for key in ("epochs", "batch_size", "channels", "layers", "max_steps_per_epoch"):
            check_range(f"evaluate.{key}", getattr(self, key), low=1)
        check_range("evaluate.lr", self.lr, low=0, low_open=True)
        check_range("evaluate.lr_min", self.lr_min, low=0, high=self.lr)
        check_range("evaluate.momentum", self.momentum, 0, 1, high_open=True)
        for key in ("weight_decay", "cutout", "auxiliary_weight", "eval_every"):
            check_range(f"evaluate.{key}", getattr(self, key), low=0)
        check_range("evaluate.grad_clip", self.grad_clip, low=0, low_open=True)
        check_range("evaluate.drop_path", self.drop_path, 0, 1, high_open=True)
        check_range("evaluate.label_smoothing", self.label_smoothing, 0, 1, high_open=True)
        if self.auxiliary_weight > 0 and self.layers < AUX_MIN_LAYERS:
            raise ConfigError(
                f"evaluate.layers={self.layers} is too few for the auxiliary head (needs >= {AUX_MIN_LAYERS}: the "
                "CIFAR head reads the 8x8 map after both reduction cells, at layers//3 and 2*layers//3, which are one "
                f"cell at 1 layer); set evaluate.layers >= {AUX_MIN_LAYERS} or evaluate.auxiliary_weight=0"
            )


def check_search_layers(layers: int) -> None:
    """A DARTS supernet needs a normal cell: its reduction cells sit at ``layers // 3`` and ``2 * layers // 3``.

    With 1 or 2 cells every cell reduces, the normal cell's alphas never enter a forward pass, and the derived
    normal cell would be its initial guess (the final network then stacks it ``evaluate.layers`` times).
    """
    if layers < SEARCH_MIN_LAYERS:
        reductions = sorted({layers // 3, 2 * layers // 3})
        raise ConfigError(
            f"search.layers={layers} builds a supernet without a normal cell (reduction cells sit at layers//3 and "
            f"2*layers//3: cell{'s' if len(reductions) > 1 else ''} {' and '.join(map(str, reductions))}), so the "
            f"normal cell would never be searched; set search.layers >= {SEARCH_MIN_LAYERS}"
        )


@dataclass(frozen=True)
class Metric:
    """A metric a task reports: its key in ``summarize()``, whether higher or lower is better, a column label.

    The record stores it as ``test_<name>``; tables, the regression gate and candidate scoring read
    the direction from here, so a plug-in task with a lower-is-better metric (perplexity) just works.
    """

    name: str  # key in summarize()'s dict, e.g. "error"
    direction: str  # "max" (higher is better) or "min"
    label: str = ""  # column header, e.g. "Test error (%)"

    def __post_init__(self):
        if self.direction not in ("max", "min"):
            raise ValueError(f"Metric {self.name!r}: direction must be 'max' or 'min', got {self.direction!r}")

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` is strictly better than ``b``."""
        return a > b if self.direction == "max" else a < b


@dataclass
class DataInfo:
    """Where the data came from, for the run record."""

    source: str  # e.g. "imagefolder-tar:/data/cifar10-jpg.tar.gz" or "embedded:cifar10_demo.npz"
    sha256: str  # of the decoded images and labels, so any two sources with equal pixels agree
    sizes: Mapping[str, int]  # examples per split after limits
    roles: Mapping[str, str] | None = None  # which file or part played each split's role, when not the official one


class Task:
    """The base class of every task (subclass it, register the subclass in ``TASKS``).

    A subclass sets the class attributes without defaults and overrides the methods that raise
    ``NotImplementedError``; every other member is an optional hook whose default is stated here,
    and the harness calls it without asking whether it exists.
    """

    # Required.
    config_class: ClassVar[type]  # the ``task:`` block's dataclass; the task is built as ``cls(config)``
    metrics: tuple[Metric, ...]  # every metric summarize() returns, with its direction
    main_metric: str  # the metric tables and the regression gate report (e.g. "error")
    score_key: str  # the metric that ranks candidates during derivation (its direction from ``metrics``)
    # Optional, with defaults.
    search_config_class: ClassVar[type] = SearchConfig  # the ``search:`` block (subclasses SearchConfig)
    train_config_class: ClassVar[type] = TrainConfig  # the ``evaluate:`` block
    reference_table: ClassVar[str | None] = None  # results/references/<name>.csv holding this task's published rows
    example_unit: ClassVar[str] = "examples"  # what ``count_examples`` counts ("images", "tokens")
    conformance_space: ClassVar[str] = "dag"  # the space egsbench.testing builds this task's supernet in
    # the genotype egsbench.testing trains: a GENOTYPES name or a Genotype (None: DARTS_V2)
    conformance_genotype: ClassVar[str | Genotype | None] = None
    # numbers of the derived cell looked up in a tabular benchmark (NAS-Bench-201), by ``ground_truth``: the record
    # keeps them under ``ground_truth.metrics``, the tables and ``egsbench compare`` show them as ``gt_<name>``
    ground_truth_metrics: ClassVar[tuple[Metric, ...]] = ()

    def prepare_data(self) -> DataInfo:
        """Load or locate the data; raise ``DataNotFoundError`` saying where it looked and what to do."""
        raise NotImplementedError

    def loader(self, split: str, batch_size: int, generator: torch.Generator | None = None, recipe: Any = None) -> Any:
        """An iterable of batches over ``split`` (one of ``SPLITS``, or a split the task adds) with that split's
        augmentation (``recipe`` for "train"); a ``DataLoader`` when the runner may shard and place it."""
        raise NotImplementedError

    def build_supernet(self, space: SearchSpace, config: Any) -> nn.Module:
        """The supernet of ``space`` sized by the task's search config (default: the task cannot search)."""
        raise ConfigError(
            f"task {type(self).__name__} has no search supernet; search on another task and transfer the cell "
            "(transfer_from) or train a fixed genotype (method: fixed)"
        )

    def op_costs(self, supernet: nn.Module) -> Callable[..., dict[str, torch.Tensor]] | None:
        """The supernet's per-(edge, op) costs for cost-aware methods (EGS, SNAS): ``op_costs(metric, per_cell)``;
        default: the supernet's own when it is a :class:`~egsbench.tasks.spaces.Supernet`, else None."""
        return supernet.op_costs if isinstance(supernet, Supernet) else None

    def search_loss(self, model: nn.Module, batch: Any, weights: EdgeWeights) -> LossOutput:
        """The supernet's loss on one search batch under ``weights`` (methods reach the task only through this)."""
        raise NotImplementedError

    def build_network(self, genotype: Genotype, config: Any) -> nn.Module:
        """The final network of ``genotype`` sized by the evaluate config."""
        raise NotImplementedError

    def example_input(self) -> Any:
        """One input sample with a batch axis, for MAC counting (a tuple is passed as several arguments)."""
        raise NotImplementedError

    def count_examples(self, batch: Any) -> int:
        """Training examples in ``batch``, for examples_per_s; default: the leading dimension of its first tensor."""
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        return int(first.shape[0])

    def make_optimizer(self, model: nn.Module, config: Any) -> torch.optim.Optimizer:
        """The final-training optimiser of ``model`` (the runner prepares it)."""
        raise NotImplementedError

    def start_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int, config: Any) -> Any:
        """Per-epoch recipe state (lr schedule, drop-path probability), passed to ``train_loss``; default None."""
        return None

    def train_loss(self, model: nn.Module, batch: Any, config: Any, state: Any = None) -> LossOutput:
        """The final network's training loss on one batch (the runner does backward, clipping and the step)."""
        raise NotImplementedError

    def end_epoch(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        epoch: int,
        config: Any,
        evaluate: Callable[[str], dict[str, float]],
    ) -> dict[str, float]:
        """After an epoch's steps: e.g. validate (``evaluate(split)``) and switch optimisers; returns extra curve
        values (e.g. ``{"valid_ppl": ...}``); default nothing."""
        return {}

    def eval_weights(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> AbstractContextManager:
        """A context in which ``model`` holds the weights to evaluate (e.g. ASGD's averages); default as trained."""
        return nullcontext()

    def eval_sums(self, model: nn.Module, batch: Any, weights: EdgeWeights | None = None) -> torch.Tensor:
        """Metric sums of one batch as a 1-D tensor (summed across batches and processes)."""
        raise NotImplementedError

    def summarize(self, sums: torch.Tensor) -> dict[str, float]:
        """Turn summed ``eval_sums`` into metrics, e.g. ``{"accuracy": ..., "error": ..., "loss": ...}``."""
        raise NotImplementedError

    def search_measure(self, space: SearchSpace, probabilities: Mapping[str, torch.Tensor] | None) -> dict[str, Any]:
        """Values the search curves add after each search epoch, from the method's learned op distribution
        ``{cell type: (E, K)}`` (None for a method that learns none): e.g. a tabular benchmark's numbers of the
        current argmax cell (NAS-Bench-201); default nothing."""
        return {}

    def ground_truth(self, genotype: Genotype) -> dict[str, Any] | None:
        """The derived genotype's numbers in a tabular benchmark, for the record's ``ground_truth`` (``benchmark``,
        ``file``, ``hp``, ``arch``, ``index`` and ``metrics`` named as ``ground_truth_metrics``); default None."""
        return None

    def record_extras(self) -> dict[str, Any]:
        """What the task adds to the run record's ``extras`` (e.g. ImageNet's fitted width); default nothing."""
        return {}

    @classmethod
    def conformance_config(cls, tmp_path: Path) -> Any:
        """A config on a few dozen examples for ``egsbench.testing.check_task`` (write fixtures under ``tmp_path``)."""
        raise NotImplementedError(
            f"task class {cls.__name__} has no `conformance_config(tmp_path)` class method; add one that returns a "
            "`config_class` instance on a few dozen examples (write them under tmp_path if needed), so "
            "egsbench.testing.check_task can run it"
        )

    @classmethod
    def conformance_recipes(cls) -> tuple[Any, Any]:
        """A tiny ``(search config, evaluate config)`` pair for ``egsbench.testing`` (seconds on a CPU); default:
        CNN-style keys (4 channels, 3 cells, one epoch of batch 4)."""
        return (
            cls.search_config_class(channels=4, layers=3),
            cls.train_config_class(channels=4, layers=3, epochs=1, batch_size=4),
        )
