"""A regular (non-editable) install: one ``egsbench`` package carrying its data, nothing else at the top level."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    return next(out.glob("egs_bench-*.whl"))


def test_wheel_installs_one_top_level_package_with_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"egsbench"}, f"top-level names besides egsbench: {sorted(top - {'egsbench'})}"
    for needed in (
        "egsbench/__main__.py",
        "egsbench/testing/__init__.py",
        "egsbench/core/registry.py",
        "egsbench/benchmark/configs/smoke/egs-cifar10.yaml",
        "egsbench/tasks/data/cifar10_demo.npz",
        "egsbench/results/references/cifar10.csv",
        "egsbench/results/tolerances.yaml",
        "egsbench/results/golden/egs-cifar10-seed0.json",
    ):
        assert needed in names, f"{needed} missing from the wheel"


def test_installed_wheel_reads_its_data_from_the_install_not_the_cwd(wheel, tmp_path):
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    work = tmp_path / "project"  # a user's project with names that must not shadow ours
    (work / "benchmark").mkdir(parents=True)
    (work / "benchmark" / "__init__.py").write_text("raise RuntimeError('user benchmark/ imported')\n")
    (work / "tasks.py").write_text("raise RuntimeError('user tasks.py imported')\n")
    code = (
        "import egsbench, egsbench.benchmark.config as c, egsbench.benchmark.references as r;"
        "print(egsbench.__file__); print(c.CONFIG_DIR); print(r.REFERENCE_DIR);"
        "print(len(c.bundled_configs()))"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    package, configs, references, count = done.stdout.split()
    for path in (package, configs, references):
        assert Path(path).resolve().is_relative_to(site.resolve()), f"{path} is not read from the install"
    assert int(count) >= 20
