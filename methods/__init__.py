"""Search methods: how architecture parameters become edge weights, are updated, and derive a genotype."""

# Importing a method module registers it in METHODS.
from . import darts, egs, fixed, gdas, random_search, snas  # noqa: F401
from .base import LossOutput, SearchConfig, SearchContext, SearchMethod, StepStats
from .registry import METHODS

__all__ = ["METHODS", "LossOutput", "SearchConfig", "SearchContext", "SearchMethod", "StepStats"]
