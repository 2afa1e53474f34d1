"""The docstring examples run with the tests, and the docs they point to exist.

``python -m pytest`` collects the packages' doctests (pyproject ``--doctest-modules``; the root ``conftest.py``
imports each module as ``egsbench.<folder>.<module>``). These checks keep that working: examples import the
installed names, every package module imports without the optional packages (collection imports them all),
and the fidelity docs that module docstrings link exist and are indexed.
"""

from __future__ import annotations

import ast
import doctest
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmark", "methods", "tasks", "egsbench")
FIDELITY = ROOT / "docs" / "fidelity"
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _package_files() -> list[Path]:
    return sorted(f for folder in PACKAGES for f in (ROOT / folder).rglob("*.py") if f.name != "__main__.py")


def _root_conftest():
    spec = importlib.util.spec_from_file_location("_root_conftest", ROOT / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _docstrings(path: Path) -> list[str]:
    """Every docstring of a module (its own, its classes' and functions'), read without importing it."""
    nodes = [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, DOCUMENTED)]
    return [doc for doc in map(ast.get_docstring, nodes) if doc]


def test_pytest_collects_the_package_doctests():
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "--doctest-modules" in options["addopts"].split()
    assert set(PACKAGES) <= set(options["testpaths"])


@pytest.mark.parametrize(
    "path, name",
    [
        ("methods/base.py", "egsbench.methods.base"),
        ("tasks/spaces/__init__.py", "egsbench.tasks.spaces"),
        ("benchmark/config.py", "egsbench.benchmark.config"),
        ("egsbench/core/registry.py", "egsbench.core.registry"),
        ("tests/test_doctests.py", None),  # tests/ holds no doctests
        ("scripts/make_demo_data.py", None),
    ],
)
def test_doctest_modules_import_under_their_installed_name(path, name):
    assert _root_conftest().installed_name(ROOT / path) == name


def test_examples_import_the_installed_package_not_the_source_folders():
    """``from tasks.spaces import ...`` only works from the repository root, and there the relative imports break."""
    stale = re.compile(r"^\s*(from|import)\s+(benchmark|methods|tasks|results)\b", re.MULTILINE)
    parser = doctest.DocTestParser()
    bad = [
        f"{path.relative_to(ROOT)}: {example.source.strip()}"
        for path in _package_files()
        for docstring in _docstrings(path)
        for example in parser.get_examples(docstring)
        if stale.search(example.source)
    ]
    assert not bad, "examples must import egsbench.<folder>...:\n" + "\n".join(bad)


def test_every_package_module_imports_without_the_optional_packages():
    """Doctest collection imports every module: one that needs ray, submitit, tensorboard or xautodl at import
    time would break ``python -m pytest`` for anyone without the ``test`` extras."""
    code = (
        "import importlib, sys\n"
        "for name in ('ray', 'submitit', 'tensorboard', 'xautodl', 'jsonschema'):\n"
        "    sys.modules[name] = None  # absent: import fails, find_spec answers None\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "installed_name = importlib.import_module('conftest').installed_name\n"
        "from pathlib import Path\n"
        f"for path in {[str(p) for p in _package_files()]!r}:\n"
        "    importlib.import_module(installed_name(Path(path)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def _fidelity_links(text: str) -> set[str]:
    return set(re.findall(r"docs/fidelity/([\w-]+\.md)", text))


def test_module_docstrings_link_fidelity_files_that_exist():
    linked = {name for path in _package_files() for name in _fidelity_links(path.read_text())}
    assert linked, "the method and space modules link their fidelity files"
    assert {"egs.md", "darts.md", "snas.md", "gdas.md", "random_search.md", "fixed.md", "spaces.md", "rnn.md"} <= linked
    missing = sorted(name for name in linked if not (FIDELITY / name).is_file())
    assert not missing, f"linked from a docstring but absent under docs/fidelity/: {missing}"


def test_fidelity_index_lists_every_component_file():
    index = (FIDELITY / "README.md").read_text()
    listed = set(re.findall(r"\]\(([\w-]+\.md)\)", index))
    present = {p.name for p in FIDELITY.glob("*.md")} - {"README.md"}
    assert listed == present, f"index lists absent {sorted(listed - present)}, omits {sorted(present - listed)}"


def test_fidelity_tables_have_the_four_columns():
    for path in sorted(FIDELITY.glob("*.md")):
        if path.name == "README.md":
            continue
        header = next((line for line in path.read_text().splitlines() if line.startswith("| original")), None)
        assert header is not None, f"{path.name}: no deviations table"
        assert [c.strip() for c in header.strip("|").split("|")] == ["original", "this project", "why", "effect"]
