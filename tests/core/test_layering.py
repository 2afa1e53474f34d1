"""The layering the package promises: a light ``import egsbench``, a core that imports nothing of its
users, methods that load no task, and no library code that switches matplotlib's backend."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("accelerate", "matplotlib", "timm")


def _modules_after(statement: str) -> set[str]:
    """The top-level and egsbench modules a fresh interpreter holds after running ``statement``."""
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.split())


def test_import_egsbench_loads_no_accelerate_matplotlib_or_timm():
    loaded = _modules_after("import egsbench")
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}
    # ... and its API still resolves on first use
    loaded = _modules_after("import egsbench; egsbench.run")
    assert "egsbench.benchmark.api" in loaded


@pytest.mark.parametrize("module", ["egsbench.methods.egs", "egsbench.methods.darts", "egsbench.methods"])
def test_a_method_module_imports_no_task_and_no_timm(module):
    loaded = _modules_after(f"import {module}")
    tasks = {m for m in loaded if m.startswith("egsbench.tasks.") and not m.startswith("egsbench.tasks.spaces")}
    assert tasks <= {"egsbench.tasks.base"}, tasks  # the task registry and protocol, no task module
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def test_the_registries_still_load_their_built_in_members():
    from egsbench.methods import METHODS
    from egsbench.tasks import TASKS

    assert {"darts", "egs", "gdas", "random", "snas"} <= set(METHODS.names())
    assert {"cifar10", "imagenet", "ptb", "wt2", "voc2012"} <= set(TASKS.names())


@pytest.mark.parametrize("registry", ["egsbench.methods.METHODS", "egsbench.tasks.TASKS"])
def test_each_provided_name_is_registered_by_the_module_the_registry_names(registry):
    """``provides`` is a second record of where a built-in lives: a stale entry would import a module that does
    not register the name (the lookup then falls back to importing everything, silently slow)."""
    module, name = registry.rsplit(".", 1)
    reg = getattr(__import__(module, fromlist=[name]), name)
    assert reg.provides and set(reg.provides.values()) <= set(reg.modules)
    for entry, where in reg.provides.items():
        assert reg.get(entry).__module__.startswith(where), (entry, where)
    assert set(reg.provides) == {n for n in reg.names() if reg.get(n).__module__.startswith("egsbench.")}


def test_a_cifar10_lookup_imports_only_its_own_task_and_no_timm():
    loaded = _modules_after("from egsbench.tasks import TASKS; TASKS.get('cifar10')")
    assert "egsbench.tasks.cifar" in loaded and "timm" not in loaded
    assert not {"egsbench.tasks.imagenet", "egsbench.tasks.lm", "egsbench.tasks.voc"} & loaded


def _imports(path: Path) -> set[str]:
    """Absolute module names ``path`` imports (relative imports resolved against the egsbench tree)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                out.add("." * node.level + (node.module or ""))
            else:
                out.add(node.module or "")
    return out


def test_core_imports_only_the_standard_library_and_torch():
    for path in (ROOT / "egsbench" / "core").glob("*.py"):
        for name in _imports(path):
            assert not name.startswith("..") and not name.startswith("egsbench"), f"{path.name} imports {name}"
            assert name.startswith(".") or name.split(".")[0] not in {"timm", "accelerate", "matplotlib", "pandas"}


def test_methods_never_import_a_task_module():
    for path in (ROOT / "methods").glob("*.py"):
        for name in _imports(path):
            if name.startswith("..tasks"):
                assert name.startswith("..tasks.spaces"), f"methods/{path.name} imports {name}"
            assert not name.startswith("..benchmark"), f"methods/{path.name} imports {name}"


def test_no_library_module_switches_the_matplotlib_backend():
    offenders = []
    for folder in ("benchmark", "methods", "tasks", "egsbench"):
        for path in (ROOT / folder).rglob("*.py"):
            names = _imports(path)
            if "matplotlib.use(" in path.read_text() or "matplotlib.pyplot" in names or "pyplot" in str(names):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders


def test_the_formatter_owns_the_formatting():
    """``ruff format`` leaves the tree as it is, and hand layouts it may not touch stay rare."""
    folders = ["benchmark", "methods", "tasks", "egsbench", "tests", "scripts", "examples"]
    skips = sum(p.read_text().count("fmt: skip") for f in folders for p in (ROOT / f).rglob("*.py"))
    assert skips < 20, f"{skips} '# fmt: skip' markers; let ruff format lay the code out"
    ruff = subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True)
    if ruff.returncode != 0:
        pytest.skip("ruff is not installed (pip install -e '.[lint]')")
    check = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *folders], cwd=ROOT, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
