"""The reliability suite's ``cli`` fixture: the CLI in-process (its snapshots and on-disk fixtures:
:mod:`egsbench.testing.reliability`, shared with ``scripts/reliability_cases.py``).

Every case asserts three things: the exit code, the one ``error:`` line (what was wrong and what to do),
and that nothing was left behind (no folder created, or the folder byte-for-byte unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from egsbench.benchmark.cli import main


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
