"""EGS-Bench harness: configs, registries, the runner, records and the command line."""

from .config import ExperimentConfig, load_config
from .registry import METHODS, SPACES, TASKS, load_plugins
from .runner import RunResult, run_experiment

__all__ = [
    "METHODS",
    "SPACES",
    "TASKS",
    "ExperimentConfig",
    "RunResult",
    "load_config",
    "load_plugins",
    "run_experiment",
]
