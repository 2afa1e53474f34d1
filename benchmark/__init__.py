"""EGS-Bench harness: configs, registries, the runner, records and the command line.

The names below load on first use, so ``import egsbench.benchmark.tables`` does not start accelerate.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ExperimentConfig": "config",
    "load_config": "config",
    "METHODS": "registry",
    "SPACES": "registry",
    "TASKS": "registry",
    "load_plugins": "registry",
    "RunResult": "runner",
    "run_experiment": "runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
