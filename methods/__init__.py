"""Search methods: how architecture parameters become edge weights, are updated, and derive a genotype."""

from . import egs  # noqa: E402,F401  (registers "egs")
from .base import LossOutput, SearchConfig, SearchContext, SearchMethod, StepStats
from .registry import METHODS

__all__ = ["METHODS", "LossOutput", "SearchConfig", "SearchContext", "SearchMethod", "StepStats"]
