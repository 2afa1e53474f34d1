"""The scripts in examples/ run as their docstrings say (at their smallest size); the plug-in example has its own
tests (tests/test_plugins.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_prints_the_comparison_with_its_uncertainty_and_writes_the_plot(tmp_path, capsys):
    compare = _script("compare")
    argv = ["--out", str(tmp_path), "--methods", "gdas", "random", "--seeds", "0", "1", "--fast"]
    assert compare.main([*argv, "--baseline", "random"]) == 0
    out = capsys.readouterr().out
    assert "### cifar10: Test error (%) against random" in out
    row = next(line for line in out.splitlines() if line.startswith("| gdas | smoke |"))
    assert " ± " in row and " | 2 | " in row and "[" in row  # mean ± std over 2 seeds, a bootstrap interval
    assert "genotype agreement across seeds" in out
    plot = tmp_path / "compare_cifar10_test_error.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.parent.name for p in tmp_path.rglob("record.json")) == [
        "gdas-seed0",
        "gdas-seed1",
        "random-seed0",
        "random-seed1",
    ]
    assert compare.main([*argv, "--seeds", "1"]) == 0  # finished folders are reused: no run, same records
    assert "gdas seed 1: test error" in capsys.readouterr().out


def test_compare_refuses_an_unknown_method_with_one_line(tmp_path):
    from egsbench.tasks.spaces import UserError

    with pytest.raises(UserError, match="did you mean 'gdas'"):
        _script("compare").main(["--out", str(tmp_path), "--methods", "gdsa", "--fast"])
