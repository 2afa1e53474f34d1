"""Task adapters: data, networks, losses, metrics and final-training recipes. Search spaces live in ``tasks.spaces``."""

from . import cifar  # noqa: E402,F401  (registers "cifar10")
from .base import SPLITS, TASKS, DataInfo, Task, TrainConfig

__all__ = ["SPLITS", "TASKS", "DataInfo", "Task", "TrainConfig"]
