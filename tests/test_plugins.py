"""The plug-in path: the worked example in examples/plugin, found through its entry points, and its own
tests run from a copy outside the repository against the installed ``egsbench``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import egsbench.benchmark.registry as registry
from egsbench.benchmark.cli import main
from egsbench.benchmark.config import load_config
from egsbench.benchmark.runner import run_experiment
from egsbench.methods import METHODS
from egsbench.tasks import TASKS
from egsbench.testing import METHOD_CHECKS, TASK_CHECKS, conformance_task, write_image_folder

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin"


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory):
    """Make the example importable and visible to importlib.metadata, as `pip install -e examples/plugin` would."""
    site = tmp_path_factory.mktemp("site")
    dist = site / "egsbench_example-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: egsbench-example\nVersion: 0.1.0\n")
    # The entry points are exactly the ones the example's pyproject.toml declares.
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    (dist / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in entries.items())
            for group, entries in project["entry-points"].items()
        )
    )
    sys.path[:0] = [str(site), str(EXAMPLE)]
    for reg in (registry.METHODS, registry.TASKS, registry.SPACES):
        reg._plugins_loaded = False  # as in a fresh process: the next lookup reads the entry points
    yield
    sys.path.remove(str(site))
    sys.path.remove(str(EXAMPLE))


def test_entry_points_register_the_example(example_plugin, capsys):
    # No load_plugins() call: the first lookup imports the entry points (the Python API sees plug-ins too).
    assert METHODS.get("single-level-softmax").__name__ == "SingleLevelSoftmax"
    assert "single-level-softmax" in METHODS.names()
    assert "imagefolder32" in TASKS.names()
    assert main(["list", "methods"]) == 0
    assert "single-level-softmax" in capsys.readouterr().out.split()


@pytest.mark.parametrize("check", METHOD_CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_example_method_passes_the_conformance_suite(example_plugin, check):
    check(METHODS.get("single-level-softmax"))


@pytest.mark.parametrize("check", TASK_CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
def test_example_task_passes_the_conformance_suite(example_plugin, tmp_path, check):
    check(conformance_task(TASKS.get("imagefolder32"), tmp_path))


def test_example_task_and_method_run_end_to_end(example_plugin, tmp_path):
    data = write_image_folder(tmp_path / "data")
    cfg = load_config(str(EXAMPLE / "egsbench_example" / "configs" / "smoke.yaml"), [f"task.data_dir={data}"])
    result = run_experiment(cfg, tmp_path / "run", progress=False)
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["method"] == "single-level-softmax" and record["task"] == "imagefolder32"
    assert record["data"]["sizes"]["test"] == 24
    assert result.genotype == result.genotype.from_dict(record["genotype"])


def test_example_task_missing_data_is_a_one_line_error(example_plugin, tmp_path, capsys):
    config = str(EXAMPLE / "egsbench_example" / "configs" / "smoke.yaml")
    assert main(["run", config, "--out", str(tmp_path / "r"), "--set", f"task.data_dir={tmp_path}/none"]) == 2
    assert "no ImageFolder tree" in capsys.readouterr().err


@pytest.mark.slow
def test_a_plugin_outside_the_repo_passes_egsbench_testing(tmp_path):
    """Copy the example anywhere and run its own tests: they need nothing from this repository but the install."""
    plugin = tmp_path / "egsbench-example"
    shutil.copytree(EXAMPLE, plugin, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.egg-info"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")}
    env |= {"PYTHONPATH": str(plugin), "EGSBENCH_CACHE": str(tmp_path / "cache")}

    def python(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=plugin, env=env, capture_output=True, text=True, timeout=600)

    # What that process can import: egsbench from the install, none of the repository's top-level folders.
    probe = "import importlib.util as u; print([n for n in ('egsbench', 'benchmark', 'methods', 'tasks', 'results') "
    probe += "if u.find_spec(n)])"
    assert python("-c", probe).stdout.split() == ["['egsbench']"]

    done = python("-m", "pytest", "-q", "-p", "no:cacheprovider")
    output = done.stdout + done.stderr
    expected = len(re.findall(r"^def test_", (plugin / "tests" / "test_plugin.py").read_text(), flags=re.M))
    assert done.returncode == 0, output
    assert re.search(rf"\b{expected} passed\b", output) and "skipped" not in output, output
