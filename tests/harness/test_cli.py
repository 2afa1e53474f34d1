"""The command line: listings, and every bad-input case exits 2 with one `error:` line and no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from egsbench.benchmark.cli import main
from egsbench.benchmark.config import bundled_configs


def run_cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "egsbench", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.mark.parametrize(
    "what, expected", [("methods", "egs"), ("tasks", "cifar10"), ("spaces", "dag"), ("configs", "smoke/egs-cifar10")]
)
def test_list(what, expected, capsys):
    assert main(["list", what]) == 0
    assert expected in capsys.readouterr().out.split()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "method.name=gdass"], "unknown method 'gdass'"),
        (["--set", "task.name=cifar100"], "unknown task 'cifar100'; did you mean 'cifar10'?"),
        (["--set", "method.lamda=0.3"], "unknown config key method.lamda; did you mean method.lam?"),
        (["--set", "search.epochs=two"], "'search.epochs' must be int"),
        (["--set", "task.data_dir=/nonexistent/cifar"], "CIFAR-10 not found at /nonexistent/cifar"),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(args, message, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "smoke/egs-cifar10", *args, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message in lines[0]
    assert "Traceback" not in err
    assert not (out / "record.json").exists() and not (out / "config.yaml").exists()  # nothing half-written


def test_the_installed_command_exits_2_with_the_one_line_and_no_traceback(tmp_path):
    """The cases above in this process; one through ``python -m egsbench`` (the real entry point, exit status,
    and whatever a fresh interpreter prints on stderr)."""
    out = tmp_path / "run"
    proc = run_cli("run", "smoke/egs-cifar10", "--set", "task.name=cifar100", "--out", str(out), "--no-progress")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown task 'cifar100'; did you mean 'cifar10'?")
    assert not (out / "record.json").exists() and not (out / "config.yaml").exists()


def test_unknown_config_name_lists_the_closest_bundled_one(tmp_path, capsys):
    assert main(["run", "smokey/egs-cifar10", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip() == (
        "error: unknown config 'smokey/egs-cifar10'; did you mean 'smoke/egs-cifar10'? Valid configs: "
        + ", ".join(bundled_configs())
        + " (or pass the path of a YAML file)"
    )


def test_usage_errors_exit_non_zero():
    proc = run_cli("list", "widgets")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
