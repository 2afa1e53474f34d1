"""A tiny name -> class registry (timm's ``_registry`` in miniature).

It lives on the lowest floor (``tasks/spaces``) so that spaces, methods and tasks can all
register themselves without importing the harness above them.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")

__all__ = ["Registry", "UnknownNameError", "unknown_name_message"]


class Registry(Generic[T]):
    """Maps names to registered classes (or factory functions).

    Examples:
        >>> MODELS = Registry("model")
        >>> @MODELS.register("tiny")
        ... class Tiny: ...
        >>> MODELS.get("tiny") is Tiny
        True
        >>> MODELS.get("tinny")
        Traceback (most recent call last):
        ...
        tasks.spaces.errors.UnknownNameError: unknown model 'tinny'; did you mean 'tiny'? Valid models: tiny
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorator

    def add(self, name: str, obj: T) -> None:
        if name in self._entries and self._entries[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered to {self._entries[name]!r}")
        self._entries[name] = obj

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(unknown_name_message(self.kind, name, self.names())) from None

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def unknown_name_message(kind: str, name: str, valid: list[str]) -> str:
    """``unknown task 'cifar' ; did you mean 'cifar10'? Valid tasks: ...``"""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.4)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    return f"unknown {kind} {name!r}{hint} Valid {kind}s: {', '.join(valid) or '(none)'}"
