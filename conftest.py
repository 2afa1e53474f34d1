"""Doctest collection for the folders that install as sub-packages of ``egsbench``.

``benchmark/``, ``methods/``, ``tasks/`` and ``results/`` are ``egsbench.benchmark``, ``egsbench.methods``, ...
(pyproject ``package-dir``). pytest would import ``methods/base.py`` as ``methods.base``, a top-level package
in which the relative imports (``from ..core import ...``) fail, so their doctest modules, packages and modules
named on the command line import under the installed name instead. Doctests are collected from the packages
only, not from ``tests/``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from _pytest.doctest import DoctestModule
from _pytest.python import Module, Package

ROOT = Path(__file__).resolve().parent
INSTALLED = {"benchmark": "egsbench.benchmark", "methods": "egsbench.methods", "tasks": "egsbench.tasks"}
INSTALLED |= {"results": "egsbench.results", "egsbench": "egsbench"}


def installed_name(path: Path) -> str | None:
    """``ROOT/methods/base.py`` -> ``egsbench.methods.base``; None outside the packages."""
    try:
        parts = list(Path(path).resolve().relative_to(ROOT).with_suffix("").parts)
    except ValueError:
        return None
    if not parts or parts[0] not in INSTALLED:
        return None
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([INSTALLED[parts[0]], *parts[1:]])


class InstalledDoctestModule(DoctestModule):
    """The doctests of a package module, imported as ``egsbench.<folder>.<module>``."""

    def _getobj(self):
        return importlib.import_module(installed_name(self.path))


class InstalledModule(Module):
    """A package module named on the command line (``pytest methods/egs.py``), imported under its installed name."""

    def _getobj(self):
        return importlib.import_module(installed_name(self.path))


class InstalledPackage(Package):
    """A package folder whose ``__init__`` is imported under its installed name (it has no setup_module)."""

    def setup(self) -> None:
        importlib.import_module(installed_name(self.path / "__init__.py"))


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path, parent):
    collectors = yield
    out = []
    name = installed_name(file_path)
    for collector in collectors:
        if type(collector) is DoctestModule:
            if name is None:
                continue  # tests/, scripts/, examples/: no doctests there
            collector = InstalledDoctestModule.from_parent(parent, path=file_path)
        elif type(collector) is Module and name is not None:
            collector = InstalledModule.from_parent(parent, path=file_path)
        out.append(collector)
    return out


@pytest.hookimpl(wrapper=True)
def pytest_collect_directory(path, parent):
    collector = yield
    if type(collector) is Package and installed_name(path / "__init__.py") is not None:
        return InstalledPackage.from_parent(parent, path=path)
    return collector
