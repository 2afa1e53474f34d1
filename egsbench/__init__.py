"""EGS-Bench: a reproducible benchmark suite for differentiable neural architecture search.

The repository's top-level folders install as sub-packages of this one import package (``benchmark/`` is
``egsbench.benchmark``, ``methods/`` is ``egsbench.methods``, ...; README, "Layout"). The public Python API is
``run``, ``load_network`` and ``build_supernet``; they load the harness (accelerate, timm) on first use, so
``import egsbench`` itself stays light.

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
