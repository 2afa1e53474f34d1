"""The method registry: ``@METHODS.register("name")`` on a class that meets ``SearchMethod``."""

from __future__ import annotations

from ..core.registry import Registry

__all__ = ["METHODS"]

_BUILT_IN = ("darts", "egs", "fixed", "gdas", "random_search", "snas")
_PROVIDES = {m: m for m in _BUILT_IN if m != "random_search"} | {"random": "random_search"}  # name -> module
METHODS: Registry = Registry(
    "method",
    group="egsbench.methods",
    modules=tuple(f"egsbench.methods.{m}" for m in _BUILT_IN),
    provides={name: f"egsbench.methods.{m}" for name, m in _PROVIDES.items()},
)
