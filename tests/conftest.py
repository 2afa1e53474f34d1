"""Shared fixtures: the real data in ../shared/data (skipped cleanly when absent) and tiny spaces.

A whole-suite run (``pytest`` with no paths, where pytest-xdist is installed and the machine has two cores or
more) runs on two xdist workers, a test file at a time each (``--dist loadfile``: a file's module fixtures are
built once), one intra-op thread per worker. ``-n 0`` (or ``-p no:xdist``) runs it in one process; paths given
on the command line run in one process unless ``-n`` says otherwise.

The two-process launches of ``tests/distributed`` start in the background as soon as the tests that read
them are collected (and are stopped if the session ends first), and their tests run last, so the launches
run beside the rest of the suite (on a loaded machine). Under xdist the controller process starts them and
the worker given those tests reads their results from the folder they write to.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(
    os.environ.get("EGSBENCH_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)
CIFAR_TAR = SHARED_DATA / "cifar10-jpg.tar.gz"


XDIST_WORKERS = 2  # a whole-suite run's workers (fewer on a one-core machine: none)


def _xdist_worker() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """Two xdist workers for a whole-suite run (see the module docstring); an explicit ``-n`` always wins."""
    opt = config.option
    if _xdist_worker() or not config.pluginmanager.hasplugin("xdist") or opt.numprocesses is not None:
        return
    if config.args_source != pytest.Config.ArgsSource.TESTPATHS or opt.collectonly or opt.usepdb:
        return
    if getattr(opt, "benchmark_only", False) or os.environ.get("EGSBENCH_BENCH", "") not in ("", "0"):
        return  # timings: one process (pytest-benchmark turns itself off under xdist)
    workers = min(XDIST_WORKERS, os.cpu_count() or 1)
    if workers > 1:
        opt.numprocesses, opt.tx = workers, ["popen"] * workers
        opt.dist = "loadfile" if opt.dist == "no" else opt.dist
        if hasattr(opt, "benchmark_disable"):  # its cases are skipped in this run anyway: no warning that says so
            opt.benchmark_disable = True


def pytest_configure(config):
    if _xdist_worker():  # two workers share the cores: the processes their tests start get one thread too
        os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Decoded-data caches go to a per-session folder (shared by xdist workers, written atomically), never the
    user's home."""
    old = os.environ.get("EGSBENCH_CACHE")
    if _xdist_worker():  # the workers' base folders are popen-gwN under one session folder
        cache = tmp_path_factory.getbasetemp().parent / "cache"
        cache.mkdir(exist_ok=True)
    else:
        cache = tmp_path_factory.mktemp("cache")
    os.environ["EGSBENCH_CACHE"] = str(cache)  # (threads: pytest_runtest_setup)
    yield
    if old is None:
        os.environ.pop("EGSBENCH_CACHE", None)
    else:
        os.environ["EGSBENCH_CACHE"] = old


@pytest.fixture(scope="session")
def cifar_tar() -> Path:
    if not CIFAR_TAR.is_file():
        pytest.skip(f"real CIFAR-10 not available at {CIFAR_TAR}")
    return CIFAR_TAR.resolve()


# The thread count of the smoke runs that tests compare bit for bit (test_gate reruns shipped_smoke's): CPU float
# results depend on it (how a reduction is split), and a config without `threads` takes the session's, which
# pytest_runtest_setup moves from 1 to 2 once the background launches end (a single-process session).
SMOKE_THREADS = "threads=1"


@pytest.fixture(scope="session")
def shipped_smoke(tmp_path_factory):
    """``shipped_smoke(method)``: the folder of ``smoke/<method>-cifar10`` run as shipped, once per session, in a
    folder holding only such runs (``.parent``: what ``egsbench regress --runs`` reads). Tests read it, never
    write into it. They run on one thread (``SMOKE_THREADS``), outside a run's identity (its hash)."""
    from egsbench.benchmark.config import load_config
    from egsbench.benchmark.runner import run_experiment

    root = tmp_path_factory.mktemp("shipped-smoke")

    def run(method: str) -> Path:
        folder = root / method
        if not (folder / "record.json").is_file():
            run_experiment(load_config(f"smoke/{method}-cifar10", [SMOKE_THREADS]), folder, progress=False)
        return folder

    return run


DISTRIBUTED = "tests/distributed/"
_background = pytest.StashKey()


def pytest_collection_modifyitems(session, config, items):
    """The distributed tests go last: their launches run in the background while the others run."""
    late = [item for item in items if item.nodeid.startswith(DISTRIBUTED)]
    if late:
        items[:] = [item for item in items if not item.nodeid.startswith(DISTRIBUTED)] + late


def pytest_collection_finish(session):
    if _xdist_worker() or session.config.option.collectonly:  # (xdist: the controller starts them)
        return
    if any("distributed_launches" in getattr(item, "fixturenames", ()) for item in session.items):
        from tests.distributed.launches import Background

        background = Background(Path(tempfile.mkdtemp(prefix="egsbench-ddp-")))
        background.start()
        session.config.stash[_background] = background


_ddp_root = pytest.StashKey()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """(xdist controller) Every worker learns the folder the distributed launches write their results to."""
    config = node.config
    if _ddp_root not in config.stash:
        config.stash[_ddp_root] = Path(tempfile.mkdtemp(prefix="egsbench-ddp-"))
    node.workerinput["egsbench_ddp_root"] = str(config.stash[_ddp_root])


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """(xdist controller) The launches start once a worker has collected the distributed tests."""
    config = node.config
    if _background not in config.stash and any(nodeid.startswith(DISTRIBUTED) for nodeid in ids):
        from tests.distributed.launches import Background

        background = Background(config.stash[_ddp_root])
        background.start()
        config.stash[_background] = background


def pytest_runtest_setup(item):
    """One intra-op thread while the two-process launches run beside this process (two ranks of one thread each
    share the two cores with it), two once they are done: three spinning OpenMP threads on two cores would
    slow everything far more than the thread it saves. An xdist worker always takes one (two workers)."""
    if _xdist_worker():
        torch.set_num_threads(1)
        return
    background = item.config.stash.get(_background, None)
    busy = background is not None and background.thread is not None and background.thread.is_alive()
    torch.set_num_threads(1 if busy else min(2, os.cpu_count() or 1))


def pytest_unconfigure(config):
    background = config.stash.get(_background, None)
    if background is not None and background.thread is not None:
        if background.thread.is_alive():  # the session ended early (-x, ^C, a subset): no launch outlives it
            background.stop()
            background.thread.join(timeout=30)
        shutil.rmtree(next(iter(background.launches.values())).out.parent, ignore_errors=True)
    if _ddp_root in config.stash:  # (xdist controller) the folder exists even when no launch ran
        shutil.rmtree(config.stash[_ddp_root], ignore_errors=True)


@pytest.fixture(scope="session")
def distributed_launches(request):
    """The background launches (started here when the session did not start them; an xdist worker reads the
    results of the controller's)."""
    if _xdist_worker():
        from tests.distributed.launches import Results

        return Results(Path(request.config.workerinput["egsbench_ddp_root"]))
    background = request.config.stash.get(_background, None)
    if background is None:
        from tests.distributed.launches import Background

        background = Background(Path(tempfile.mkdtemp(prefix="egsbench-ddp-")))
        request.config.stash[_background] = background
    return background
