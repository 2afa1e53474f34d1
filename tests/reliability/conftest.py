"""Helpers of the reliability suite: the CLI in-process, snapshots of what a command leaves, on-disk fixtures.

Every case asserts three things: the exit code, the one ``error:`` line (what was wrong and what to do),
and that nothing was left behind (no folder created, or the folder byte-for-byte unchanged).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from egsbench.benchmark.cli import main

# The cheapest end-to-end run: GDAS (one sampled op per edge), one step per epoch, a few dozen images.
BASE = "smoke/gdas-cifar10"
FAST = [
    "task.train_limit=64",
    "task.test_limit=32",
    "search.batch_size=16",
    "search.max_steps_per_epoch=1",
    "search.score_batches=1",
    "evaluate.batch_size=16",
    "evaluate.max_steps_per_epoch=1",
    "evaluate.epochs=1",
]


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def error(self) -> str:
        """The one ``error:`` line; fails the test unless there is exactly one and nothing looks like a traceback."""
        lines = [line for line in self.err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, self.err
        assert "Traceback" not in self.err and "Traceback" not in self.out, self.err
        return lines[0]


@pytest.fixture
def cli(capsys):
    """``cli(*args)``: ``egsbench ARGS`` in this process; an uncaught exception (a traceback) fails the test."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def overrides(*values: str) -> list[str]:
    """``--set`` arguments for each of ``values``."""
    return [x for v in values for x in ("--set", v)]


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` (relative path -> sha256 of its bytes, or "dir"); {} when absent."""
    if not root.exists():
        return {}
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


# ---- data in the real on-disk formats ------------------------------------------------------------------------------


def image(path: Path, size: int = 32, seed: int = 0, fmt: str | None = None) -> Path:
    """A random RGB image of ``size`` x ``size`` saved as PNG or JPEG (by suffix, or ``fmt``)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, fmt or ("JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"))
    return path


def image_folder(root: Path, classes=("cat", "dog"), per_class: int = 4, size: int = 32, test_classes=None) -> Path:
    """An ImageFolder tree ``root/{train,test}/<class>/<i>.png|jpg`` (PNG and JPEG mixed, as real trees are)."""
    seed = 0
    for split, names in (("train", classes), ("test", test_classes or classes)):
        for name in names:
            for i in range(per_class):
                seed += 1
                image(root / split / name / f"{i}.{'png' if i % 2 else 'jpg'}", size, seed)
    return root


def tar_gz(folder: Path, path: Path) -> Path:
    """``folder`` packed as a ``.tar.gz`` under one top-level folder, as CIFAR-10 mirrors ship it."""
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return path


def jpeg_bytes(size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()
