"""The test suite's own decision: a whole-suite run takes two pytest-xdist workers, anything else one process."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests import conftest

TESTPATHS, ARGS = pytest.Config.ArgsSource.TESTPATHS, pytest.Config.ArgsSource.ARGS


class _Plugins:
    def __init__(self, names):
        self.names = set(names)

    def hasplugin(self, name: str) -> bool:
        return name in self.names


def _config(source=TESTPATHS, plugins=("xdist", "benchmark"), **options):
    option = SimpleNamespace(numprocesses=None, dist="no", tx=[], collectonly=False, usepdb=False, benchmark_only=False)
    if "benchmark" in plugins:
        option.benchmark_disable = False
    for key, value in options.items():
        setattr(option, key, value)
    return SimpleNamespace(option=option, args_source=source, pluginmanager=_Plugins(plugins))


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # (this test may itself run in a worker)
    monkeypatch.delenv("EGSBENCH_BENCH", raising=False)
    monkeypatch.setattr(conftest.os, "cpu_count", lambda: 2)
    return monkeypatch


def test_a_whole_suite_run_takes_two_workers_a_file_at_a_time(two_cores):
    config = _config()
    conftest.pytest_cmdline_main(config)
    o = config.option
    assert (o.numprocesses, o.tx, o.dist) == (2, ["popen", "popen"], "loadfile")
    assert o.benchmark_disable  # its cases are skipped in this run: no warning from the plug-in
    config = _config(plugins=("xdist",), dist="load")  # a --dist given stays; no pytest-benchmark: nothing to tell
    conftest.pytest_cmdline_main(config)
    assert (config.option.numprocesses, config.option.dist) == (2, "load")


@pytest.mark.parametrize(
    "made, env",
    [
        ({"source": ARGS}, {}),  # paths on the command line
        ({"numprocesses": 0}, {}),  # -n 0
        ({"plugins": ("benchmark",)}, {}),  # no xdist (or -p no:xdist)
        ({"collectonly": True}, {}),
        ({"usepdb": True}, {}),
        ({"benchmark_only": True}, {}),  # timings run in one process
        ({}, {"EGSBENCH_BENCH": "1"}),
        ({}, {"PYTEST_XDIST_WORKER": "gw0"}),  # a worker never starts workers
    ],
    ids=["paths", "n0", "no-xdist", "collect-only", "pdb", "benchmark-only", "EGSBENCH_BENCH", "in-a-worker"],
)
def test_anything_else_runs_in_one_process(two_cores, made, env):
    for key, value in env.items():
        two_cores.setenv(key, value)
    config = _config(**made)
    before = vars(config.option).copy()
    conftest.pytest_cmdline_main(config)
    assert vars(config.option) == before


def test_one_core_runs_in_one_process(two_cores):
    two_cores.setattr(conftest.os, "cpu_count", lambda: 1)
    config = _config()
    conftest.pytest_cmdline_main(config)
    assert config.option.numprocesses is None and config.option.dist == "no"
