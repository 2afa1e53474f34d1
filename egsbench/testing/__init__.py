"""Conformance checks, shipped for plug-in authors.

A third-party method or task runs the same checks as every built-in one, from its own tests::

    from egsbench.testing import check_method, check_task

    def test_my_method():
        check_method(MyMethod)

    def test_my_task(tmp_path):
        check_task(MyTask, MyTask.config_class(data_dir=...))

Each ``check_*`` raises ``AssertionError`` naming what failed. The project's own tests call the
same functions over the whole registry.
"""

from __future__ import annotations

from .methods import METHOD_CHECKS, batch, check_method, tiny_context
from .tasks import TASK_CHECKS, check_task

__all__ = ["METHOD_CHECKS", "TASK_CHECKS", "batch", "check_method", "check_task", "tiny_context"]
