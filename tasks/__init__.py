"""Task adapters: data, networks, losses, metrics and final-training recipes. Search spaces live in ``tasks.spaces``.

The task modules are imported when ``TASKS`` is first asked for a name, not with this package.
"""

from .base import SPLITS, TASKS, WEIGHT_FIELDS, CNNSearchConfig, DataInfo, Metric, Task, TrainConfig

__all__ = ["SPLITS", "TASKS", "WEIGHT_FIELDS", "CNNSearchConfig", "DataInfo", "Metric", "Task", "TrainConfig"]
