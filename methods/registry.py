"""The method registry: ``@METHODS.register("name")`` on a class that meets ``SearchMethod``."""

from __future__ import annotations

from ..tasks.spaces.registry import Registry

__all__ = ["METHODS"]

METHODS: Registry = Registry("method", group="egsbench.methods")
