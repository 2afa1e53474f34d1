"""Shared fixtures: the real data in ../shared/data (skipped cleanly when absent) and tiny spaces.

The two-process launches of ``tests/distributed`` start in the background as soon as the tests that read
them are collected (and are stopped if the session ends first), and their tests run last, so the launches
run beside the rest of the suite (on a loaded machine).
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


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Decoded-data caches go to a per-session folder, never the user's home."""
    old = os.environ.get("EGSBENCH_CACHE")
    os.environ["EGSBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))  # (threads: pytest_runtest_setup)
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


@pytest.fixture(scope="session")
def shipped_smoke(tmp_path_factory):
    """``shipped_smoke(method)``: the folder of ``smoke/<method>-cifar10`` run as shipped, once per session, in a
    folder holding only such runs (``.parent``: what ``egsbench regress --runs`` reads). Tests read it, never
    write into it."""
    from egsbench.benchmark.config import load_config
    from egsbench.benchmark.runner import run_experiment

    root = tmp_path_factory.mktemp("shipped-smoke")

    def run(method: str) -> Path:
        folder = root / method
        if not (folder / "record.json").is_file():
            run_experiment(load_config(f"smoke/{method}-cifar10"), folder, progress=False)
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
    if any("distributed_launches" in getattr(item, "fixturenames", ()) for item in session.items):
        from tests.distributed.launches import Background

        background = Background(Path(tempfile.mkdtemp(prefix="egsbench-ddp-")))
        background.start()
        session.config.stash[_background] = background


def pytest_runtest_setup(item):
    """One intra-op thread while the two-process launches run beside this process (two ranks of one thread each
    share the two cores with it), two once they are done: three spinning OpenMP threads on two cores would
    slow everything far more than the thread it saves."""
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


@pytest.fixture(scope="session")
def distributed_launches(request):
    """The background launches (started here when the session did not start them)."""
    background = request.config.stash.get(_background, None)
    if background is None:
        from tests.distributed.launches import Background

        background = Background(Path(tempfile.mkdtemp(prefix="egsbench-ddp-")))
        request.config.stash[_background] = background
    return background
