"""The harness knows methods and tasks only through their classes (issue 20, items 3 and 4).

Two greps over ``benchmark/*.py``, done on the syntax tree so comments and docstrings never count:

- no string constant equals a registered method or task name (``"egs"``, ``"cifar10"``...). A name that is
  also a registered *space* (``"darts"``: the DARTS method and the DARTS space) is not flagged, because a
  string cannot say which of the two it means and the space defaults (``space: "darts"``) are legitimate;
  the method is still reachable only through ``METHODS``, which this test cannot see, so such a name is
  checked by the reader, not here.
- no ``getattr(x, "<member>", ...)`` / ``hasattr(x, "<member>")`` on a member of ``Task`` or ``SearchMethod``:
  every optional hook is declared with its default on the base class, so the harness calls it directly.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from egsbench.methods import METHODS
from egsbench.methods.base import SearchMethod
from egsbench.tasks import TASKS
from egsbench.tasks.base import Task
from egsbench.tasks.spaces import SPACES

BENCHMARK = Path(__file__).resolve().parents[2] / "benchmark"
# Scripts that measure named methods against named peers by design (``python -m egsbench.benchmark.bench_peer``
# times EGS against DARTS/GDAS/SNAS): the names are their subject, not a harness decision.
MEASUREMENT_SCRIPTS = {
    "bench_layout.py",
    "bench_memory.py",
    "bench_methods.py",
    "bench_peer.py",
    "bench_scaling.py",
    "bench_search_step.py",
    "bench_threads.py",
    "gpu_check.py",
    "cell_sizes.py",
    "profile_step.py",
}


def _docstring_ids(tree: ast.AST) -> set[int]:
    """The ``id`` of every docstring constant (module, class, function)."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def name_constants(source: str, names: set[str]) -> list[tuple[int, str]]:
    """(line, value) of each string constant of ``source`` that is not a docstring and equals one of ``names``."""
    tree = ast.parse(source)
    docstrings = _docstring_ids(tree)
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value in names
        and id(node) not in docstrings
    ]


def attr_probes(source: str, members: set[str]) -> list[tuple[int, str]]:
    """(line, member) of each ``getattr(x, "<member>", ...)`` / ``hasattr(x, "<member>")`` in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value in members
        ):
            found.append((node.lineno, node.args[1].value))
    return found


def harness_names() -> set[str]:
    """Registered method and task names that are not also a registered space name (see the module docstring)."""
    return (set(METHODS.names()) | set(TASKS.names())) - set(SPACES.names())


def protocol_members() -> set[str]:
    """What ``Task`` and ``SearchMethod`` declare: attributes and methods (``dir``) and annotated required fields
    (``metrics``, ``main_metric``...), without Python's own dunders."""
    members = set()
    for base in (Task, SearchMethod):
        members |= set(dir(base)) | set(base.__annotations__)
    return {m for m in members if not (m.startswith("__") and m.endswith("__"))}


def _harness_files(exempt: set[str] = frozenset()) -> list:
    """``benchmark/*.py`` as pytest params, one per file."""
    return [pytest.param(path, id=path.name) for path in sorted(BENCHMARK.glob("*.py")) if path.name not in exempt]


def test_finders_see_what_they_should():
    source = (
        'def f(x):\n    """egs"""\n    a = "egs"  # "ptb"\n'
        '    return getattr(x, "main_metric", None), hasattr(x, "y")\n'
    )
    assert name_constants(source, {"egs", "ptb"}) == [(3, "egs")]
    assert attr_probes(source, {"main_metric", "z"}) == [(4, "main_metric")]
    assert {"main_metric", "metrics", "op_costs", "variant_keys"} <= protocol_members()
    assert "egs" in harness_names() and "darts" not in harness_names()  # "darts" is also a space


@pytest.mark.parametrize("path", _harness_files(exempt=MEASUREMENT_SCRIPTS))
def test_no_method_or_task_names_in_the_harness(path):
    found = name_constants(path.read_text(), harness_names())
    assert not found, f"{path.name}: method/task names (line, name); read them from the METHODS/TASKS classes: {found}"


@pytest.mark.parametrize("path", _harness_files())
def test_no_getattr_on_protocol_members(path):
    found = attr_probes(path.read_text(), protocol_members())
    assert not found, f"{path.name}: getattr/hasattr on Task/SearchMethod members (declared on the base): {found}"
