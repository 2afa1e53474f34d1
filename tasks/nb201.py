"""NAS-Bench-201 on CIFAR-10 (``nb201``): search the ``nb201`` cell, look its ground truth up in NATS-Bench.

Data and splits are CIFAR-10's (:mod:`.cifar`); the networks and recipes are NATS-Bench's: the search is xautodl's
NATS-algos weight-sharing config on a C = 16, N = 5 supernet, the final training NAS-Bench-201's 200-epoch
recipe. The derived cell's test accuracy on CIFAR-10, CIFAR-100 and ImageNet16-120 (the mean over the benchmark's
trials, ``task.benchmark_hp`` epochs) is read from the NATS-Bench topology file at ``task.benchmark_file`` through
the ``nats_bench`` API (``pip install 'egs-bench[nb201]'``) into the record's ``ground_truth``; after every search
epoch the method's current argmax cell is looked up into the search curves (``gt_*`` columns), as NATS-algos
logs it. Tested against a small fixture in the API's format (``egsbench.testing.nats``), not the real file.

Deviations from the paper and the original code: docs/fidelity/nb201.md
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.config import SearchConfig
from ..core.errors import ConfigError, DataError, DataNotFoundError, UserError, check_range
from ..core.genotype_formats import to_nb201_string
from .base import TASKS, DataInfo, Metric, TrainConfig
from .cifar import CIFAR10, CIFAR10Config
from .spaces import Genotype, NB201Network, NB201SearchNetwork, SearchSpace, argmax_genotype

__all__ = ["GROUND_TRUTH", "NATSLookup", "NB201Config", "NB201SearchConfig", "NB201Task", "NB201TrainConfig"]

logger = logging.getLogger(__name__)

BENCHMARK = "NATS-Bench topology (tss)"
SIMPLE_ARCHIVE = "NATS-tss-v1_0-3ffb9-simple"  # the directory NATS-Bench ships for fast_mode=True
HPS = ("12", "200")  # NATS-Bench's training schedules in the topology space (epochs)
# (record metric name, NATS-Bench dataset): the test accuracies a derived cell's ground truth holds
GROUND_TRUTH = (("cifar10", "cifar10"), ("cifar100", "cifar100"), ("imagenet16_120", "ImageNet16-120"))
MISSING_PACKAGE = (
    "task nb201 looks cells up in NATS-Bench through the nats_bench package, which is not installed; "
    "pip install 'egs-bench[nb201]' (or pip install 'nats_bench>=1.8')"
)


def default_benchmark_file() -> str:
    """``$EGSBENCH_NATS_TSS``, else the NATS-Bench API's own default: ``$TORCH_HOME`` (``~/.torch``)/<archive>."""
    torch_home = os.environ.get("TORCH_HOME", str(Path.home() / ".torch"))
    return os.environ.get("EGSBENCH_NATS_TSS", str(Path(torch_home) / SIMPLE_ARCHIVE))


@dataclass
class NB201Config(CIFAR10Config):
    """CIFAR-10's keys, and the NATS-Bench topology benchmark the derived cells are looked up in."""

    # the unpacked NATS-tss-v1_0-3ffb9-simple directory (read lazily: fast mode) or a NATS-tss-*.pickle.pbz2 file
    # (read whole); None: $EGSBENCH_NATS_TSS, else $TORCH_HOME (~/.torch)/NATS-tss-v1_0-3ffb9-simple
    benchmark_file: str | None = None
    benchmark_hp: str = "200"  # the benchmark's training schedule to read: "200" epochs (NAS-Bench-201) or "12"

    def __post_init__(self):
        super().__post_init__()
        if self.benchmark_hp not in HPS:
            raise ConfigError(f"task.benchmark_hp must be one of {list(HPS)}, got {self.benchmark_hp!r}")


@dataclass
class NB201SearchConfig(SearchConfig):
    """The ``search:`` block: xautodl's NATS-algos ``weight-sharing.config`` and its C = 16, N = 5 supernet."""

    epochs: int = 100
    batch_size: int = 64
    lr: float = 0.025  # SGD, cosine-annealed per epoch to lr_min (NATS-algos: per step)
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 5e-4
    grad_clip: float = 5.0  # NATS-algos clips nothing; the methods here all clip the supernet weights
    channels: int = 16  # C of the first stage
    layers: int = 5  # N: cells per stage (3N cells and two ResNet blocks)

    def __post_init__(self):
        super().__post_init__()
        for key in ("channels", "layers"):
            check_range(f"search.{key}", getattr(self, key), low=1)


@dataclass
class NB201TrainConfig(TrainConfig):
    """The ``evaluate:`` block: NAS-Bench-201's ``200E.config`` (Nesterov SGD, no cutout, drop path or aux head)."""

    epochs: int = 200
    batch_size: int = 256
    channels: int = 16  # C of the first stage
    layers: int = 5  # N: cells per stage
    lr: float = 0.1
    lr_min: float = 0.0
    weight_decay: float = 5e-4
    grad_clip: float = 5.0  # NAS-Bench-201 clips nothing (docs/fidelity/nb201.md)
    cutout: int = 0
    drop_path: float = 0.0
    auxiliary_weight: float = 0.0
    nesterov: bool = True


def _nats_bench():
    try:
        import nats_bench
    except ImportError:
        raise UserError(MISSING_PACKAGE) from None
    return nats_bench


class NATSLookup:
    """The NATS-Bench topology benchmark at ``path``, read through ``nats_bench.create(path, "tss")``: a directory
    in fast mode (one file per cell, read when first asked), a ``.pickle.pbz2`` file whole.

    Raises:
        UserError: ``nats_bench`` is not installed.
        DataNotFoundError: nothing at ``path``.
        DataError: ``path`` is not a NATS-Bench topology file.
    """

    def __init__(self, path: str | Path, hp: str = "200"):
        self.path, self.hp = Path(path).expanduser(), hp
        nats_bench = _nats_bench()
        if not self.path.exists():
            raise DataNotFoundError(
                f"no NATS-Bench topology benchmark at {self.path}; download {SIMPLE_ARCHIVE}.tar (NATS-Bench's "
                f"README, D-X-Y/NATS-Bench), unpack it and pass --set task.benchmark_file=<its directory> (or set "
                "$EGSBENCH_NATS_TSS)"
            )
        self.fast = self.path.is_dir()
        try:
            self.api = nats_bench.create(str(self.path), "tss", fast_mode=self.fast, verbose=False)
        except Exception as err:  # the API raises ValueError, pickle/bz2 errors, KeyError... on a foreign file
            raise DataError(
                f"{self.path} is not a NATS-Bench topology benchmark ({type(err).__name__}: {err}); pass the "
                f"{SIMPLE_ARCHIVE} directory or a NATS-tss-*.pickle.pbz2 file as task.benchmark_file"
            ) from None

    def index(self, arch: str) -> int:
        """The benchmark's index of an arch string, -1 when it lists no such cell."""
        return self.api.query_index_by_arch(arch)

    def _evaluated(self, index: int) -> bool:
        if not self.fast:
            return index in self.api.evaluated_indexes
        archive = Path(self.api.archive_dir)
        return any((archive / f"{name}.pickle.pbz2").is_file() for name in (f"{index:06d}", str(index)))

    def test_accuracies(self, arch: str) -> tuple[int, dict[str, float | None]]:
        """``(index, {metric name: test accuracy (%)})`` of ``arch`` for :data:`GROUND_TRUTH`'s data sets, averaged
        over the benchmark's trials; None for a cell (or a data set) the file does not hold."""
        index = self.index(arch)
        values: dict[str, float | None] = {name: None for name, _ in GROUND_TRUTH}
        if index < 0 or not self._evaluated(index):
            logger.warning(f"{self.path} holds no results for {arch} (index {index}); its ground truth is null")
            return index, values
        for name, dataset in GROUND_TRUTH:
            try:
                info = self.api.get_more_info(index, dataset, iepoch=None, hp=self.hp, is_random=False)
            except (KeyError, ValueError) as err:  # a data set or schedule this file lacks
                logger.warning(f"{self.path}: no {dataset} results at hp {self.hp} for {arch} ({err})")
                continue
            value = info.get("test-accuracy")
            values[name] = None if value is None else float(value)
        return index, values


@TASKS.register("nb201")
class NB201Task(CIFAR10):
    """NAS-Bench-201 search on CIFAR-10, scored by lookup in NATS-Bench (see the module docstring)."""

    config_class = NB201Config
    search_config_class = NB201SearchConfig
    train_config_class = NB201TrainConfig
    reference_table = None
    conformance_space = "nb201"
    conformance_genotype = Genotype.from_dict(  # the benchmark's ResNet-like cell
        {"normal": [[0, 1, "nor_conv_3x3"], [1, 2, "nor_conv_3x3"], [0, 3, "skip_connect"]], "normal_concat": [3]}
    )
    ground_truth_metrics = (
        Metric("cifar10", "max", "GT CIFAR-10 test acc (%)"),
        Metric("cifar100", "max", "GT CIFAR-100 test acc (%)"),
        Metric("imagenet16_120", "max", "GT ImageNet16-120 test acc (%)"),
    )

    def __init__(self, config: NB201Config):
        super().__init__(config)
        self.lookup: NATSLookup | None = None

    @classmethod
    def conformance_config(cls, tmp_path: Path) -> NB201Config:
        """The embedded CIFAR-10 subset and a NATS-Bench fixture of a few cells (for ``egsbench.testing``)."""
        from egsbench.testing.nats import write_nats_tss  # test-only helper: imported when the checks ask

        benchmark = write_nats_tss(tmp_path / "nats-tss")
        return NB201Config(data_dir="embedded", train_limit=32, test_limit=16, benchmark_file=str(benchmark))

    @classmethod
    def conformance_recipes(cls) -> tuple[NB201SearchConfig, NB201TrainConfig]:
        """A C = 4 supernet and final network with one cell per stage (for ``egsbench.testing``)."""
        return NB201SearchConfig(channels=4, layers=1, epochs=1, batch_size=4), NB201TrainConfig(
            channels=4, layers=1, epochs=1, batch_size=4
        )

    # -- data and the benchmark ----------------------------------------------------------------
    def prepare_data(self) -> DataInfo:
        """CIFAR-10 (:meth:`CIFAR10.prepare_data`), and the benchmark opened now, so a missing file or package
        stops the run before it searches."""
        info = super().prepare_data()
        path = Path(self.config.benchmark_file or default_benchmark_file()).expanduser()
        if self.lookup is None or self.lookup.path != path:
            self.lookup = NATSLookup(path, self.config.benchmark_hp)
        return info

    def _lookup(self) -> NATSLookup:
        if self.lookup is None:
            self.prepare_data()
        return self.lookup

    def ground_truth(self, genotype: Genotype) -> dict[str, Any]:
        """The record's ``ground_truth``: the cell's arch string, benchmark index and test accuracies."""
        lookup = self._lookup()
        arch = to_nb201_string(genotype)
        index, values = lookup.test_accuracies(arch)
        return {
            "benchmark": BENCHMARK,
            "file": str(lookup.path.resolve()),
            "hp": lookup.hp,
            "arch": arch,
            "index": index,
            "metrics": values,
        }

    def search_measure(self, space: SearchSpace, probabilities: Mapping[str, torch.Tensor] | None) -> dict[str, Any]:
        """The search curves' ``gt_arch`` (the current per-edge argmax cell, ``none`` included) and its ``gt_*``
        test accuracies; nothing for a method that learns no distribution (random search)."""
        if probabilities is None:
            return {}
        arch = to_nb201_string(argmax_genotype(space, probabilities))
        _, values = self._lookup().test_accuracies(arch)
        return {"gt_arch": arch} | {f"gt_{name}": value for name, value in values.items()}

    # -- networks and the final-training recipe ------------------------------------------------
    def build_supernet(self, space: SearchSpace, config: NB201SearchConfig) -> NB201SearchNetwork:
        return NB201SearchNetwork(space, config.channels, self.num_classes, config.layers, image_size=self.image_size)

    def build_network(self, genotype: Genotype, config: NB201TrainConfig) -> NB201Network:
        return NB201Network(genotype, config.channels, self.num_classes, config.layers)

    def make_optimizer(self, model: nn.Module, config: NB201TrainConfig) -> torch.optim.SGD:
        return torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            nesterov=config.nesterov and config.momentum > 0,
        )
