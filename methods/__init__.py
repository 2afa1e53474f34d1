"""Search methods: how architecture parameters become edge weights, are updated, and derive a genotype.

The method modules are imported when ``METHODS`` is first asked for a name, not with this package.
"""

from .base import LossOutput, SearchConfig, SearchContext, SearchMethod, StepStats
from .registry import METHODS

__all__ = ["METHODS", "LossOutput", "SearchConfig", "SearchContext", "SearchMethod", "StepStats"]
