"""EGS-Bench: a reproducible benchmark suite for differentiable neural architecture search.

The repository keeps its four top-level folders (``benchmark/``, ``methods/``, ``tasks/``,
``results/``); they install as sub-packages of this one import package, so nothing named
``benchmark`` or ``tasks`` lands in a user's site-packages:

- ``egsbench.benchmark``: the harness (configs, registries, runner, records, tables, CLI)
- ``egsbench.methods``: search methods (EGS, DARTS, SNAS, GDAS, random search)
- ``egsbench.tasks``: task adapters and search spaces (``egsbench.tasks.spaces``)
- ``egsbench.results``: shipped data (reference tables, golden records, tolerances)
- ``egsbench.core``: what every layer shares (registry, errors, genotype, search-config base, schedules)
- ``egsbench.testing``: conformance checks for plug-in authors

The public Python API for notebooks and scripts is the few names below; they load the harness
(accelerate, timm) on first use, so ``import egsbench`` itself stays light.

Examples:
    >>> import egsbench
    >>> record = egsbench.run("smoke/egs-cifar10", "runs/nb", overrides={"seed": 1})  # data, minutes  # doctest: +SKIP
    >>> record.metrics["test_accuracy"]  # doctest: +SKIP
    >>> net = egsbench.load_network("runs/nb")  # needs that run folder  # doctest: +SKIP
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("egs-bench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__", "build_supernet", "load_network", "run"]

_API = {"build_supernet", "load_network", "run"}


def __getattr__(name: str):
    if name in _API:
        from .benchmark import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
