"""The benchmark scripts (interleaved timing, ratios side by side) and the opt-in of the pytest-benchmark cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from egsbench.benchmark.bench_methods import BASELINE, VARIANTS, make_step, time_methods
from egsbench.benchmark.bench_search_step import main as search_step_main

ROOT = Path(__file__).resolve().parents[2]


def test_method_step_benchmark_times_every_variant():
    result = time_methods(channels=2, layers=3, batch=2, rounds=1)
    assert set(result["median_s"]) == set(VARIANTS)
    assert result[f"ratio_to_{BASELINE}"][BASELINE] == 1.0
    assert all(t > 0 for t in result["median_s"].values())


def test_make_step_rejects_an_unknown_variant():
    with pytest.raises(ValueError, match="darts_3rd.*darts_1st"):
        make_step("darts_3rd", channels=2, layers=3, batch=2)


def test_search_step_script_prints_ratios_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--channels", "2", "--layers", "3", "--batch", "2", "--rounds", "1", "--json", str(out)]
    assert search_step_main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["dense_softmax", "egs_m1", "egs_m7", "egs_m1_lam1"]
    assert all("ratio to dense" in line for line in lines[1:])
    result = json.loads(out.read_text())
    assert result["ratio_to_dense"]["dense_softmax"] == 1.0
    assert all(len(t) == 1 and t[0] > 0 for t in result["times_s"].values())


def _pytest(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run pytest in a fresh process with this repository's configuration (pyproject addopts included)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "EGSBENCH_BENCH")}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(ROOT)]
    command += ["-c", str(ROOT / "pyproject.toml"), "-o", f"cache_dir={tmp_path / 'cache'}", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "plugin_args, reason",
    [
        (["-p", "no:benchmark"], "pytest-benchmark is not installed or was disabled"),
        ([], "benchmarks run with --benchmark-only"),
    ],
    ids=["without-pytest-benchmark", "with-pytest-benchmark"],
)
def test_a_bare_pytest_skips_the_benchmarks_and_never_meets_an_unknown_option(tmp_path, plugin_args, reason):
    tiny = tmp_path / "test_tiny.py"
    tiny.write_text("def test_tiny():\n    assert 1 + 1 == 2\n")
    done = _pytest(*plugin_args, "-q", "-rs", str(tiny), str(ROOT / "tests" / "benchmarks"), tmp_path=tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "unrecognized arguments" not in output
    assert "1 passed" in output and " skipped" in output, output
    assert reason in output, output
