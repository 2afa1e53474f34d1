"""Conformance checks, shipped for plug-in authors.

A third-party method or task runs the same checks as every built-in one, from its own tests::

    from egsbench.testing import check_method, check_task, conformance_task

    def test_my_method():
        check_method(MyMethod)

    def test_my_task(tmp_path):
        check_task(conformance_task(MyTask, tmp_path))  # MyTask(MyTask.conformance_config(tmp_path))

Each ``check_*`` raises ``AssertionError`` naming what failed. The project's own tests call the
same functions over the whole registry (``METHOD_CHECKS``, ``TASK_CHECKS``).
"""

from __future__ import annotations

from .fixtures import voc_palette, write_image_folder, write_lm_files, write_voc_fixture
from .methods import METHOD_CHECKS, aten_calls, autograd_nodes, batch, check_method, op_calls, tiny_context
from .nats import write_nats_tss
from .tasks import TASK_CHECKS, check_task, conformance_task, nested_equal

__all__ = [
    "aten_calls",
    "autograd_nodes",
    "METHOD_CHECKS",
    "TASK_CHECKS",
    "batch",
    "check_method",
    "check_task",
    "conformance_task",
    "nested_equal",
    "op_calls",
    "tiny_context",
    "voc_palette",
    "write_image_folder",
    "write_lm_files",
    "write_nats_tss",
    "write_voc_fixture",
]
