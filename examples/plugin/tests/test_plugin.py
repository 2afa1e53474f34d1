"""The plug-in's own tests: the conformance checks every built-in method and task passes, from ``egsbench.testing``.

Run from ``examples/plugin`` (or a copy of it anywhere) with ``pytest``; only the installed ``egsbench`` is needed.
"""

from __future__ import annotations

import pytest
from egsbench_example.method import SingleLevelConfig, SingleLevelSoftmax
from egsbench_example.task import ImageFolder32, ImageFolder32Config

from egsbench.tasks.spaces import DataNotFoundError
from egsbench.testing import METHOD_CHECKS, TASK_CHECKS, check_method, check_task, conformance_task


def test_method_passes_every_check():
    check_method(SingleLevelSoftmax)


def test_task_passes_every_check(tmp_path):
    task = conformance_task(ImageFolder32, tmp_path)
    check_task(task)
    assert task.num_classes == 3  # learnt from the fixture's folders, not CIFAR-10's ten


def test_the_checks_ran():
    # a guard against an empty check list passing vacuously
    assert len(METHOD_CHECKS) >= 5 and len(TASK_CHECKS) >= 4


def test_bad_config_and_missing_data_are_user_errors(tmp_path):
    with pytest.raises(ValueError, match="arch_lr"):
        SingleLevelConfig(arch_lr=0)
    with pytest.raises(DataNotFoundError, match="no ImageFolder tree"):
        ImageFolder32(ImageFolder32Config(data_dir=str(tmp_path / "missing"))).prepare_data()
