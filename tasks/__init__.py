"""Task adapters: data, networks, losses, metrics and final-training recipes. Search spaces live in ``tasks.spaces``."""

# Importing a task module registers it in TASKS.
from . import cifar, imagenet, lm, timm_models, voc  # noqa: F401
from .base import SPLITS, TASKS, WEIGHT_FIELDS, CNNSearchConfig, DataInfo, Metric, Task, TrainConfig

__all__ = ["SPLITS", "TASKS", "WEIGHT_FIELDS", "CNNSearchConfig", "DataInfo", "Metric", "Task", "TrainConfig"]
