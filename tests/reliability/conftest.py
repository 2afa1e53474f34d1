"""Helpers of the reliability suite: the CLI in-process, snapshots of what a command leaves, on-disk fixtures.

Every case asserts three things: the exit code, the one ``error:`` line (what was wrong and what to do),
and that nothing was left behind (no folder created, or the folder byte-for-byte unchanged).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image

from egsbench.benchmark.cli import main
from egsbench.testing.reliability import BASE, FAST, image, image_folder, overrides, snapshot, tar_gz

__all__ = ["BASE", "FAST", "Result", "image", "image_folder", "jpeg_bytes", "overrides", "snapshot", "tar_gz"]


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


# ---- data in the real on-disk formats ------------------------------------------------------------------------------


def jpeg_bytes(size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()
