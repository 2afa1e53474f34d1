"""Shared fixtures: the real data in ../shared/data (skipped cleanly when absent) and tiny spaces."""

from __future__ import annotations

import os
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
    os.environ["EGSBENCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    torch.set_num_threads(min(2, torch.get_num_threads()))
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
